//! The PostgreSQL baselines of the writing calls: pgbench scripts with the statements the
//! daemon runs for `request_password_reset` and for the transaction of
//! `complete_password_reset`, run on a database that a daemon migrated and filled with the
//! same accounts (and then left), so the tables, indexes and rows have the daemon's shape.
//! Also bulk token fills for the token-scaling section, in SQL, since a million
//! `admin_reset_link` calls with a durable commit each would take most of an hour.
//!
//! The statements mirror `src/store/postgres/` (users.rs `user_by_email` and `lock_user`,
//! tokens.rs `issue_token` and `consume_token`, outbox.rs `enqueue`, events.rs `append`, and
//! limits.rs `take_shared` when the schema has its table), in the same order, one
//! round trip each, with values of the daemon's sizes. Where the daemon decides in Rust
//! between two round trips, the script cannot, and the difference is named at the place.

use std::path::PathBuf;

use anyhow::{anyhow, Context as _};

use super::Env;
use crate::harness::{Cluster, Script};
use crate::setup::{import_users, ok, password_hash, CLIENT_IP};

/// The columns of a user as the daemon reads them (users.rs `USER_COLUMNS`).
const USER_COLUMNS: &str = "id, email, name, role, status, password_hash, locale, created_at, \
                            updated_at, password_changed_at, credential_epoch";
/// The columns of a token as the daemon reads them (tokens.rs `TOKEN_COLUMNS`).
const TOKEN_COLUMNS: &str =
    "user_id, verifier_hash, credential_epoch, issued_at, expires_at, used_at, purge_at";
/// The shared limit's bucket number for reset requests per address (records.rs).
const RESET_PER_EMAIL_BUCKET: i16 = 1;

/// A database a daemon migrated and filled with accounts, and the script to run on it.
pub(crate) struct Baseline {
    /// The database.
    pub(crate) database: String,
    /// The pgbench script file.
    pub(crate) script: Script,
    /// Bytes of a sealed mail as the daemon queues it.
    payload_len: usize,
    /// Whether the schema has the shared rate limits (migration 2), which a reset request
    /// takes before its transaction.
    shared_limits: bool,
}

/// events.rs `append` before events were numbered under an advisory lock (the schema with
/// `latchkey_events.xid`).
const APPEND_BY_XID: &str = "INSERT INTO latchkey_events (at, kind, user_id, client_ip)
  VALUES (:now, :kind, :who, :ip);";
/// events.rs `append` since: the insert takes the events lock ([`EVENTS_LOCK`]) shared in
/// the same statement.
const APPEND_UNDER_LOCK: &str = "INSERT INTO latchkey_events (at, kind, user_id, client_ip)
  SELECT :now, :kind, :who, :ip FROM (SELECT pg_advisory_xact_lock_shared(:lock)) AS writing;";

/// The advisory lock key of event writers (`lock::EVENTS` in src/store/postgres/mod.rs).
const EVENTS_LOCK: i64 = 0x6c61_7463_686b_0005;

/// What the daemon that migrated a database runs, read from its schema.
struct Schema {
    /// Bytes of a sealed mail as the daemon queues it.
    payload_len: usize,
    /// Whether it has the shared rate limits.
    shared_limits: bool,
    /// The event insert it runs, with `:kind`, `:who` and `:ip` still to fill in.
    append: &'static str,
}

impl Schema {
    /// The event insert for `kind` by user variable `who`.
    fn append(&self, kind: &str, who: &str) -> String {
        self.append
            .replace(":kind", &format!("'{kind}'"))
            .replace(":who", who)
            .replace(":ip", &format!("'{CLIENT_IP}'"))
            .replace(":lock", &EVENTS_LOCK.to_string())
    }
}

impl Baseline {
    /// Starts a daemon on a fresh database, imports `{prefix}{i}@bench.example` for `i` in
    /// `0..users` (the accounts the measured daemon has), asks one reset for an unknown
    /// address to learn the size of a sealed mail (the decoy row keeps it), and stops the
    /// daemon, so nothing but pgbench touches the database afterwards.
    async fn prepare(
        env: &Env,
        cluster: &Cluster,
        name: &str,
        prefix: &str,
        users: usize,
    ) -> anyhow::Result<(String, Schema)> {
        let daemon = env
            .daemon(
                name,
                crate::setup::LONG_TOKENS,
                crate::setup::GENEROUS_LIMITS,
            )
            .await?;
        let database = daemon
            .database()
            .ok_or_else(|| anyhow!("the baseline daemon has no database"))?
            .to_owned();
        let conns = daemon.clients(4).await?;
        let hash = password_hash()?;
        import_users(&daemon, &conns, prefix, 0..users, &hash).await?;
        ok(
            "request_password_reset",
            conns[0]
                .request_password_reset("nobody@bench.example", Some(CLIENT_IP), None)
                .await,
        )?;
        drop(conns);
        drop(daemon);
        let facts = tokio::task::block_in_place(|| {
            cluster.psql(
                &database,
                "SELECT coalesce(max(length(mail)), 0), to_regclass('latchkey_limits') IS NOT NULL,
                        EXISTS (SELECT 1 FROM information_schema.columns
                                WHERE table_name = 'latchkey_events' AND column_name = 'xid')
                 FROM latchkey_decoy_mail",
            )
        })?;
        let mut fields = facts.trim().split('|');
        let (Some(payload), Some(limits), Some(by_xid)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(anyhow!("unexpected schema facts {facts:?}"));
        };
        let payload_len: usize = payload
            .parse()
            .with_context(|| format!("the decoy mail's length {payload:?}"))?;
        let schema = Schema {
            payload_len: payload_len.max(1),
            shared_limits: limits == "t",
            append: if by_xid == "t" {
                APPEND_BY_XID
            } else {
                APPEND_UNDER_LOCK
            },
        };
        Ok((database, schema))
    }

    /// The `request_password_reset` baseline for a known address among
    /// `{prefix}0..{prefix}{users}`: the address lookup, the shared limit if the schema has
    /// it, and `issue_token`'s transaction with the mail and the event.
    pub(crate) async fn reset(
        env: &Env,
        cluster: &Cluster,
        prefix: &str,
        users: usize,
        max_live_tokens: usize,
    ) -> anyhow::Result<Baseline> {
        let (database, schema) =
            Baseline::prepare(env, cluster, "writes-pgbench", prefix, users).await?;
        let limit = if schema.shared_limits {
            // limits.rs: one upsert in its own transaction, committed without waiting for a
            // flush, before the token's. The key is a 32-byte keyed hash of the address; with
            // the bench's generous limits the update always applies, so the daemon's second
            // read never runs.
            format!(
                "BEGIN;
SET LOCAL synchronous_commit = off;
INSERT INTO latchkey_limits AS l (bucket, key, tat_ms)
    VALUES ({RESET_PER_EMAIL_BUCKET}, sha256(int8send(:i)), :now_ms::bigint + :interval::bigint)
  ON CONFLICT (bucket, key) DO UPDATE
    SET tat_ms = greatest(l.tat_ms, :now_ms::bigint) + :interval::bigint
    WHERE greatest(l.tat_ms, :now_ms::bigint) - :now_ms::bigint <= :tau::bigint
  RETURNING tat_ms;
END;\n"
            )
        } else {
            String::new()
        };
        let keep = max_live_tokens.max(1) - 1;
        let text = format!(
            "\\set i random(0, {last})
\\set r1 random(1, 9223372036854775806)
\\set r2 random(1, 9223372036854775806)
{limit}SELECT {USER_COLUMNS} FROM latchkey_users WHERE email = '{prefix}' || :i::text || '@bench.example' \\gset u_
BEGIN;
SELECT {USER_COLUMNS} FROM latchkey_users WHERE id = :u_id FOR UPDATE;
SELECT selector, used_at, expires_at FROM latchkey_tokens WHERE user_id = :u_id ORDER BY n;
-- The daemon reads the live tokens, then deletes those beyond the cap by selector, only
-- when there are (with a bench user asked again and again, every time once the first few
-- are issued). Here one statement finds and deletes them: one index probe more.
DELETE FROM latchkey_tokens WHERE selector = ANY (ARRAY(
  SELECT selector FROM latchkey_tokens
  WHERE user_id = :u_id AND used_at IS NULL AND expires_at > :now
  ORDER BY n DESC OFFSET {keep}));
INSERT INTO latchkey_tokens (selector, {TOKEN_COLUMNS})
  VALUES (substr(sha256(int8send(:r1)), 1, 16), :u_id, sha256(int8send(:r2)),
          :u_credential_epoch, :now, :expires, NULL, :purge);
SELECT nextval('latchkey_ids') AS id \\gset m_
INSERT INTO latchkey_outbox (id, created_at, attempts, next_attempt_ms, state, last_error, payload)
  VALUES (:m_id, :now, 0, :now_ms, 'queued', NULL, :payload);
{append}
END;
",
            last = users.max(1) - 1,
            append = schema.append("reset_requested", ":u_id"),
        );
        let path = write_script(cluster, "reset", &text)?;
        Ok(Baseline {
            database,
            script: Script::File(path),
            payload_len: schema.payload_len,
            shared_limits: schema.shared_limits,
        })
    }

    /// The baseline of `complete_password_reset`'s transaction (tokens.rs `consume_token`
    /// with users.rs `change_password`): one live token per account, picked at random. A
    /// token picked twice is used again; the statements and the rows they touch are the
    /// same.
    pub(crate) async fn consume(
        env: &Env,
        cluster: &Cluster,
        users: usize,
    ) -> anyhow::Result<Baseline> {
        let (database, schema) =
            Baseline::prepare(env, cluster, "hash-pgbench", "consume", users).await?;
        let now = crate::setup::unix_now();
        tokio::task::block_in_place(|| {
            cluster.psql(
                &database,
                &format!(
                    "INSERT INTO latchkey_tokens (selector, {TOKEN_COLUMNS})
                     SELECT substr(sha256(int8send(k)), 1, 16), id, sha256(int8send(-k)),
                            credential_epoch, {now}, {now} + 86400, NULL, {now} + 172800
                     FROM (SELECT id, credential_epoch, row_number() OVER (ORDER BY id) - 1 AS k
                           FROM latchkey_users) u"
                ),
            )?;
            cluster.psql(&database, "VACUUM ANALYZE")
        })?;
        let selector = "substr(sha256(int8send(:k)), 1, 16)";
        let text = format!(
            "\\set k random(0, {last})
BEGIN;
SELECT user_id FROM latchkey_tokens WHERE selector = {selector} \\gset t_
SELECT {USER_COLUMNS} FROM latchkey_users WHERE id = :t_user_id FOR UPDATE \\gset u_
SELECT {TOKEN_COLUMNS} FROM latchkey_tokens WHERE selector = {selector} FOR UPDATE;
UPDATE latchkey_tokens SET used_at = :now WHERE selector = {selector};
-- The bench's accounts have no locale (NULL), which a pgbench variable cannot hold.
UPDATE latchkey_users SET email = :u_email, name = :u_name, role = :u_role, status = :u_status,
    password_hash = :u_password_hash, locale = NULL, updated_at = :now,
    password_changed_at = :now, credential_epoch = :u_credential_epoch + 1
  WHERE id = :t_user_id;
DELETE FROM latchkey_tokens WHERE user_id = :t_user_id
  AND ({selector} IS NULL OR selector <> {selector});
{append}
SELECT nextval('latchkey_ids') AS id \\gset m_
INSERT INTO latchkey_outbox (id, created_at, attempts, next_attempt_ms, state, last_error, payload)
  VALUES (:m_id, :now, 0, :now_ms, 'queued', NULL, :payload);
END;
",
            last = users.max(1) - 1,
            append = schema.append("reset_completed", ":t_user_id"),
        );
        let path = write_script(cluster, "consume", &text)?;
        Ok(Baseline {
            database,
            script: Script::File(path),
            payload_len: schema.payload_len,
            // The consume transaction takes no shared limit (the login limit is for logins).
            shared_limits: false,
        })
    }

    /// The script's variables for a run starting now: the times the daemon would stamp, a
    /// random payload of a sealed mail's size, and the shared limit's rate (the bench's
    /// generous one: a billion per second).
    pub(crate) fn defines(&self) -> Vec<(&'static str, String)> {
        let now = crate::setup::unix_now();
        let payload: String = (0..self.payload_len)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let mut defines = vec![
            ("now", now.to_string()),
            ("now_ms", (now * 1000).to_string()),
            ("expires", (now + 86400).to_string()),
            ("purge", (now + 2 * 86400).to_string()),
            ("payload", format!("\\x{payload}")),
        ];
        if self.shared_limits {
            // GENEROUS_LIMITS: burst 1e9 per second, so one call moves the bucket by the
            // 1 ms floor of the interval, with 999 ms of slack.
            defines.push(("interval", "1".into()));
            defines.push(("tau", "999".into()));
        }
        defines
    }

    /// Whether the script takes the shared reset limit.
    pub(crate) fn shared_limits(&self) -> bool {
        self.shared_limits
    }
}

/// Writes a script into the cluster's directory, where pgbench (as ourselves) reads it.
fn write_script(cluster: &Cluster, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = cluster.dir().join(format!("{}.sql", cluster.unique(name)));
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// The selector of bulk token `g` of a run: 16 bytes derived from `g`, so a token can be
/// named again from its number without storing its text.
const BULK_SELECTOR: &str = "substr(sha256(int8send(g) || '\\x626c6b'::bytea), 1, 16)";
/// The verifier of a bulk token, derived from its selector `sel` the same way; the store
/// keeps only its SHA-256, as for every token.
const BULK_VERIFIER: &str = "sha256(sel || '\\x76'::bytea)";

/// Adds live tokens `from..to` to a daemon's database, spread round-robin over its
/// accounts, valid for a day; rows of exactly the shape `issue_token` writes (the
/// identity column and both indexes filled by the server as for any insert). Then vacuums
/// and analyses the table, as autovacuum would on a database that grew over weeks.
pub(crate) fn fill_tokens(
    cluster: &Cluster,
    database: &str,
    from: usize,
    to: usize,
) -> anyhow::Result<()> {
    if to <= from {
        return Ok(());
    }
    let now = crate::setup::unix_now();
    cluster.psql(
        database,
        &format!(
            // The account's number is computed on the token's side only, so the join is a
            // hash join; `u.k = s.g % u.n` would compare every token with every account.
            "WITH u AS (SELECT id, credential_epoch, row_number() OVER (ORDER BY id) - 1 AS k
                        FROM latchkey_users)
             INSERT INTO latchkey_tokens (selector, {TOKEN_COLUMNS})
             SELECT sel, u.id, sha256({BULK_VERIFIER}), u.credential_epoch,
                    {now}, {now} + 86400, NULL, {now} + 172800
             FROM (SELECT {BULK_SELECTOR} AS sel,
                          g % (SELECT count(*) FROM latchkey_users) AS k
                   FROM generate_series({from}, {last}) g) s
             JOIN u ON u.k = s.k",
            last = to - 1,
        ),
    )?;
    cluster.psql(database, "VACUUM ANALYZE latchkey_tokens")?;
    Ok(())
}

/// The texts of `n` bulk tokens drawn at random (with replacement) from `0..of`, encoded as
/// the daemon encodes a token (URL-safe base64 of selector and verifier, unpadded, joined
/// by a dot).
pub(crate) fn sample_tokens(
    cluster: &Cluster,
    database: &str,
    n: usize,
    of: usize,
) -> anyhow::Result<Vec<String>> {
    let b64 = |x: &str| format!("translate(encode({x}, 'base64'), '+/=', '-_')");
    let out = cluster.psql(
        database,
        &format!(
            "SELECT {} || '.' || {} FROM (
                 SELECT {BULK_SELECTOR} AS sel FROM (
                     SELECT floor(random() * {of})::bigint AS g FROM generate_series(1, {n})) r
             ) s",
            b64("sel"),
            b64(BULK_VERIFIER),
        ),
    )?;
    let tokens: Vec<String> = out.lines().map(str::to_owned).collect();
    if tokens.len() != n {
        return Err(anyhow!(
            "asked for {n} token texts, psql gave {}",
            tokens.len()
        ));
    }
    Ok(tokens)
}
