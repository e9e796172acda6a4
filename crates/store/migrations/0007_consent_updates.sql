-- Schema 7: each consent record as the hub last took it (a batch that carried it, or a
-- consent update, with the hub's receipt). A record that changes after that (a
-- withdrawal) is sent again as an update, once, until a receipt covers it.
CREATE TABLE sync_consents_sent (
    consent_id     TEXT PRIMARY KEY REFERENCES consents(id),
    record_sha256  TEXT NOT NULL,   -- of the wire record (wire::v1::Consent) the hub holds
    sent_at        INTEGER NOT NULL
);

-- The generic outbox of schema 1 was never used by sync: batches (schema 6), tombstones
-- and the consent records above carry everything, each with the hub's receipt.
DROP INDEX IF EXISTS sync_outbox_due;
DROP TABLE sync_outbox;
