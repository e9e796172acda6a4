-- Schema 7: each consent record as the hub last took it (a batch that carried it, or a
-- consent update, with the hub's receipt). A record that changes after that (a
-- withdrawal) is sent again as an update, once, until a receipt covers it.
CREATE TABLE sync_consents_sent (
    consent_id     TEXT PRIMARY KEY REFERENCES consents(id),
    record_sha256  TEXT NOT NULL,   -- of the wire record (wire::v1::Consent) the hub holds
    sent_at        INTEGER NOT NULL
);

-- Batches committed under schema 6 carried consent records too: the hub holds those.
-- Their hash is unknown here, so each is sent once more as an update (harmless: the
-- hub upserts), and from then on only when it changes.
INSERT OR IGNORE INTO sync_consents_sent (consent_id, record_sha256, sent_at)
SELECT DISTINCT json_extract(c.value, '$.id'), '', b.updated_at
FROM sync_batches b, json_each(b.manifest, '$.consents') c
WHERE b.state = 'committed' AND json_extract(c.value, '$.id') IN (SELECT id FROM consents);

-- The generic outbox of schema 1 was never used by sync: batches (schema 6), tombstones
-- and the consent records above carry everything, each with the hub's receipt.
DROP INDEX IF EXISTS sync_outbox_due;
DROP TABLE sync_outbox;
