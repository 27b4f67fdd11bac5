//! Failed logins counted across every host: per account the consecutive failures and the
//! last one's time, per client address the last failure's time; one row each, keyed by a
//! keyed hash. A failure is one upsert, so hosts racing on one account each see the other's.

use std::net::IpAddr;

use super::super::records::FailedLogins;
use super::{int, lock, uint, PgStore};
use crate::store::StoreError;

/// The `kind` of an account's row.
const ACCOUNT: i16 = 1;
/// The `kind` of a client address's row.
const ADDRESS: i16 = 2;

impl PgStore {
    fn failure_key(&self, kind: i16, value: &[u8]) -> [u8; 32] {
        // The bucket numbers of `latchkey_limits` and these kinds are hashed apart by the
        // rate (0, 0), which no bucket has.
        self.inner.seal.limit_key(kind, (0, 0), value)
    }

    /// See [`crate::store::Store::failed_logins`].
    pub(in crate::store) async fn failed_logins(
        &self,
        account: &str,
        ip: Option<IpAddr>,
    ) -> Result<FailedLogins, StoreError> {
        let account_key = self.failure_key(ACCOUNT, account.as_bytes());
        let ip_key = ip.map(|ip| self.failure_key(ADDRESS, ip.to_string().as_bytes()));
        let c = self.reader().await?;
        let statement = c
            .prepare_cached(
                "SELECT kind, failures, last_ms FROM latchkey_login_failures
                 WHERE (kind, key) IN (($1, $2), ($3, $4))",
            )
            .await
            .map_err(super::sql)?;
        let ip_probe = ip_key.as_ref().map_or(&[][..], |k| k.as_slice());
        let rows = c
            .query(
                &statement,
                &[&ACCOUNT, &account_key.as_slice(), &ADDRESS, &ip_probe],
            )
            .await
            .map_err(super::sql)?;
        let mut seen = FailedLogins::default();
        for row in rows {
            let last = uint("latchkey_login_failures", row.get(2))?;
            match row.get::<_, i16>(0) {
                ACCOUNT => {
                    seen.account_failures = u32::try_from(row.get::<_, i32>(1)).unwrap_or(0);
                    seen.account_last_ms = last;
                }
                _ if ip_key.is_some() => seen.ip_last_ms = Some(last),
                _ => {}
            }
        }
        Ok(seen)
    }

    /// See [`crate::store::Store::login_failed`].
    pub(in crate::store) async fn login_failed(
        &self,
        account: &str,
        ip: Option<IpAddr>,
        now_ms: u64,
        forget_before_ms: u64,
    ) -> Result<(), StoreError> {
        let account_key = self.failure_key(ACCOUNT, account.as_bytes());
        let ip_key = ip.map(|ip| self.failure_key(ADDRESS, ip.to_string().as_bytes()));
        let (now, forget) = (int(now_ms), int(forget_before_ms));
        transact!(self, |tx| {
            // Like a rate-limit bucket, a count no caller is told about: losing the last few
            // to a crash forgets some failures, and a flush would make a failure slower than
            // a login for an unknown address.
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .await?;
            let statement = tx
                .prepare_cached(
                    "INSERT INTO latchkey_login_failures AS f (kind, key, failures, last_ms)
                         VALUES ($1, $2, 1, $3)
                     ON CONFLICT (kind, key) DO UPDATE
                         SET failures = CASE WHEN f.last_ms < $4 THEN 1
                                             ELSE least(f.failures, 2147483646) + 1 END,
                             last_ms = greatest(f.last_ms, $3)",
                )
                .await?;
            tx.execute(
                &statement,
                &[&ACCOUNT, &account_key.as_slice(), &now, &forget],
            )
            .await?;
            if let Some(key) = &ip_key {
                tx.execute(&statement, &[&ADDRESS, &key.as_slice(), &now, &forget])
                    .await?;
            }
            Ok(())
        })
    }

    /// See [`crate::store::Store::forget_login_failures`].
    pub(in crate::store) async fn forget_login_failures(
        &self,
        account: &str,
    ) -> Result<(), StoreError> {
        let key = self.failure_key(ACCOUNT, account.as_bytes());
        let c = self.client().await?;
        let statement = c
            .prepare_cached("DELETE FROM latchkey_login_failures WHERE kind = $1 AND key = $2")
            .await
            .map_err(super::sql)?;
        c.execute(&statement, &[&ACCOUNT, &key.as_slice()])
            .await
            .map_err(super::sql)?;
        Ok(())
    }

    /// Drops up to `limit` account rows older than `account_before_ms` and address rows
    /// older than `address_before_ms`; one host at a time.
    pub(in crate::store) async fn sweep_failures(
        &self,
        account_before_ms: u64,
        address_before_ms: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (accounts, addresses) = (int(account_before_ms), int(address_before_ms));
        transact!(self, |tx| {
            if !lock::try_take(&tx, lock::FAILURES).await? {
                return Ok(0);
            }
            let statement = tx
                .prepare_cached(
                    "DELETE FROM latchkey_login_failures WHERE (kind, key) IN (
                         (SELECT kind, key FROM latchkey_login_failures
                          WHERE kind = $1 AND last_ms < $2 LIMIT $5 FOR UPDATE SKIP LOCKED)
                         UNION ALL
                         (SELECT kind, key FROM latchkey_login_failures
                          WHERE kind = $3 AND last_ms < $4 LIMIT $5 FOR UPDATE SKIP LOCKED))",
                )
                .await?;
            let n = tx
                .execute(
                    &statement,
                    &[&ACCOUNT, &accounts, &ADDRESS, &addresses, &limit],
                )
                .await?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }
}
