-- latchkey schema 3: failed logins, for throttling by consecutive failures (NIST SP 800-63B
-- 5.2.2), counted across every host. kind 1 is an account (its consecutive failures), kind 2
-- a client address (when it last failed). Keys are keyed hashes, never addresses or IPs.
CREATE TABLE latchkey_login_failures (
    kind smallint NOT NULL,
    key bytea NOT NULL,
    failures integer NOT NULL,
    last_ms bigint NOT NULL,
    PRIMARY KEY (kind, key)
);
-- The sweep drops what has been forgotten.
CREATE INDEX latchkey_login_failures_last ON latchkey_login_failures (kind, last_ms);
