-- Schema 7: each consent record as the hub last took it (a batch that carried it, or a
-- consent update, with the hub's receipt). A record that changes after that (a
-- withdrawal) is sent again as an update, once, until a receipt covers it.
CREATE TABLE sync_consents_sent (
    consent_id     TEXT PRIMARY KEY REFERENCES consents(id),
    record_sha256  TEXT NOT NULL,   -- of the wire record (wire::v1::Consent) the hub holds
    sent_at        INTEGER NOT NULL
);
