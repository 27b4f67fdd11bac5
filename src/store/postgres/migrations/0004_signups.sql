-- latchkey schema 4: sign-ups waiting for their address to be confirmed (the concealing
-- sign-up mode). Only the SHA-256 of the mailed verifier is stored. A pending sign-up is not
-- an account: its address is not in latchkey_users until the link is used with the password.
CREATE TABLE latchkey_signups (
    selector bytea PRIMARY KEY,
    verifier_hash bytea NOT NULL,
    email text NOT NULL,
    name text NOT NULL,
    locale text,
    password_hash text NOT NULL,
    issued_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    used_at bigint,
    purge_at bigint NOT NULL,
    failures integer NOT NULL DEFAULT 0
);
-- The sweep walks what is due.
CREATE INDEX latchkey_signups_purge ON latchkey_signups (purge_at);
