-- latchkey schema 1. Times are Unix seconds unless named _ms. Every table is prefixed
-- latchkey_ so the database may be shared.

-- The store's own facts (the outbox key check).
CREATE TABLE latchkey_meta (
    name text PRIMARY KEY,
    value bytea NOT NULL
);

-- User and message ids, never reused.
CREATE SEQUENCE latchkey_ids;

CREATE TABLE latchkey_users (
    id bigint PRIMARY KEY,
    -- Normalised by the daemon before it gets here; unique across every host.
    email text NOT NULL UNIQUE,
    name text NOT NULL,
    role text NOT NULL,
    status text NOT NULL CHECK (status IN ('active', 'disabled')),
    password_hash text NOT NULL,
    locale text,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    password_changed_at bigint NOT NULL,
    credential_epoch bigint NOT NULL
);

-- Reset tokens: only the SHA-256 of the verifier is stored.
CREATE TABLE latchkey_tokens (
    selector bytea PRIMARY KEY,
    user_id bigint NOT NULL,
    verifier_hash bytea NOT NULL,
    credential_epoch bigint NOT NULL,
    issued_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    used_at bigint,
    purge_at bigint NOT NULL,
    -- Issue order, for revoking a user's oldest tokens beyond the cap.
    n bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX latchkey_tokens_user ON latchkey_tokens (user_id, n);
CREATE INDEX latchkey_tokens_purge ON latchkey_tokens (purge_at);

-- Queued mail, payloads sealed under the outbox key (which is not in the database). A sender
-- claims a message by leasing it; another takes it only once the lease has ended.
CREATE TABLE latchkey_outbox (
    id bigint PRIMARY KEY,
    created_at bigint NOT NULL,
    attempts integer NOT NULL,
    next_attempt_ms bigint NOT NULL,
    state text NOT NULL CHECK (state IN ('queued', 'dead')),
    last_error text,
    payload bytea NOT NULL,
    lease_until_ms bigint NOT NULL DEFAULT 0,
    lease_owner text
);
CREATE INDEX latchkey_outbox_due ON latchkey_outbox (next_attempt_ms, id) WHERE state = 'queued';

-- The event log. Rows arrive unnumbered; a reader numbers (seq) every committed row once no
-- transaction that writes events is still running, so the numbers readers see never gain a
-- gap behind them (see src/store/postgres/events.rs).
CREATE TABLE latchkey_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seq bigint UNIQUE,
    at bigint NOT NULL,
    kind text NOT NULL,
    user_id bigint,
    client_ip text
);
CREATE INDEX latchkey_events_unnumbered ON latchkey_events (id) WHERE seq IS NULL;

-- The last event number handed out; its row lock serialises numbering.
CREATE TABLE latchkey_event_seq (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    last bigint NOT NULL
);
INSERT INTO latchkey_event_seq (one, last) VALUES (true, 0);

-- Rows that requests for unknown addresses lock and overwrite, so that they do the work of
-- a real request without growing anything: a row to lock as a real request locks its user,
-- and one table each for what a real request writes to three (a token, a message, an event).
CREATE TABLE latchkey_decoy (slot integer PRIMARY KEY);
CREATE TABLE latchkey_decoy_tokens (slot integer PRIMARY KEY, token bytea);
CREATE TABLE latchkey_decoy_mail (slot integer PRIMARY KEY, mail bytea);
CREATE TABLE latchkey_decoy_events (slot integer PRIMARY KEY, event text);
INSERT INTO latchkey_decoy (slot) SELECT generate_series(0, 63);
INSERT INTO latchkey_decoy_tokens (slot) SELECT generate_series(0, 63);
INSERT INTO latchkey_decoy_mail (slot) SELECT generate_series(0, 63);
INSERT INTO latchkey_decoy_events (slot) SELECT generate_series(0, 63);
