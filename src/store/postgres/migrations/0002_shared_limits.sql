-- latchkey schema 2: rate limits shared by every host (the reset cooldown per address and the
-- login limit per account), as GCRA buckets: the theoretical arrival time of the next call.
-- Keys are keyed hashes (under a key derived from the outbox key), never addresses.
CREATE TABLE latchkey_limits (
    bucket smallint NOT NULL,
    key bytea NOT NULL,
    tat_ms bigint NOT NULL,
    PRIMARY KEY (bucket, key)
);
-- The sweep drops buckets that are full again (indistinguishable from new ones).
CREATE INDEX latchkey_limits_tat ON latchkey_limits (tat_ms);
