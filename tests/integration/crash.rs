//! Crashes (issue 7): clients create accounts, change passwords and complete resets while the
//! daemon is killed with SIGKILL at random moments and restarted. Every change acknowledged
//! before a kill must be there afterwards, no reset token is ever accepted twice, and the
//! store opens cleanly every time.
//!
//! CI runs a few cycles; `LATCHKEY_CRASH_CYCLES=200 cargo test --test integration crash` is a
//! soak run.

use std::time::Duration;

use latchkey_client::{ApiError, Client, Error, UserRef};

use latchkey_test_support::{new_user, Daemon, Setup};

/// Cycles when `LATCHKEY_CRASH_CYCLES` is not set.
const DEFAULT_CYCLES: usize = 4;
/// Concurrent clients.
const WORKERS: usize = 4;

/// One account as the clients know it.
#[derive(Clone, Debug)]
struct Account {
    email: String,
    /// Set once the creation was acknowledged (or found after a crash).
    id: Option<u64>,
    /// The password last acknowledged.
    password: String,
    /// A password sent in a change whose reply never came: it may or may not have been stored.
    maybe_password: Option<String>,
    /// Whether the creation itself is unacknowledged.
    maybe_created: bool,
    /// The credential epoch last acknowledged.
    epoch: u64,
    /// Tokens a completion was acknowledged for.
    used_tokens: Vec<String>,
}

/// Whether an error means the connection died (the outcome is unknown), as opposed to a reply.
fn lost(e: &Error) -> bool {
    !matches!(e, Error::Api(_))
}

/// Works on its own accounts until the connection dies; returns them.
async fn worker(
    daemon_socket: std::path::PathBuf,
    cycle: usize,
    w: usize,
    mut accounts: Vec<Account>,
) -> Vec<Account> {
    let options = latchkey_client::ConnectOptions {
        call_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let Ok(client) = Client::connect_with(&daemon_socket, options).await else {
        return accounts;
    };
    for step in 0.. {
        let fresh = format!("c{cycle}w{w}s{step}");
        let pick = rand::random_range(0..4);
        if pick == 0 || accounts.iter().all(|a| a.id.is_none()) {
            let email = format!("{fresh}@example.com");
            let password = format!("password {fresh}");
            accounts.push(Account {
                email: email.clone(),
                id: None,
                password: password.clone(),
                maybe_password: None,
                maybe_created: true,
                epoch: 0,
                used_tokens: Vec::new(),
            });
            match client.create_user(new_user(&email, &password)).await {
                Ok(user) => {
                    let a = accounts.last_mut().expect("just pushed");
                    a.id = Some(user.id);
                    a.maybe_created = false;
                }
                Err(e) if lost(&e) => return accounts,
                Err(e) => panic!("create_user {email}: {e}"),
            }
            continue;
        }
        let known: Vec<usize> = (0..accounts.len())
            .filter(|i| accounts[*i].id.is_some())
            .collect();
        let i = known[rand::random_range(0..known.len())];
        let id = accounts[i].id.expect("known");
        let new_password = format!("new password {fresh}");
        accounts[i].maybe_password = Some(new_password.clone());
        let done = if pick == 1 {
            let current = accounts[i].password.clone();
            client.change_password(id, &current, &new_password).await
        } else {
            let link = match client.admin_reset_link(UserRef::Id(id), None).await {
                Ok(link) => link,
                Err(e) if lost(&e) => return accounts,
                Err(e) => panic!("admin_reset_link: {e}"),
            };
            let token = link.link.split_once("token=").expect("token").1.to_owned();
            let done = client
                .complete_password_reset(&token, &new_password, None, None)
                .await;
            if done.is_ok() {
                accounts[i].used_tokens.push(token);
            }
            done
        };
        match done {
            Ok(changed) => {
                let a = &mut accounts[i];
                assert!(changed.credential_epoch > a.epoch, "{a:?}: {changed:?}");
                a.epoch = changed.credential_epoch;
                a.password = new_password;
                a.maybe_password = None;
            }
            Err(e) if lost(&e) => return accounts,
            Err(e) => panic!("password change for {}: {e}", accounts[i].email),
        }
    }
    accounts
}

/// Checks every account against the restarted daemon and settles what was unknown.
async fn verify(client: &Client, accounts: &mut Vec<Account>) {
    let mut kept = Vec::new();
    for mut a in accounts.drain(..) {
        if a.maybe_created {
            match client.find_user(&a.email).await {
                Ok(user) => {
                    a.id = Some(user.id);
                    a.maybe_created = false;
                }
                Err(Error::Api(ApiError::NotFound)) => continue,
                Err(e) => panic!("find_user {}: {e}", a.email),
            }
        }
        let id = a.id.expect("created");
        let user = client
            .get_user(id)
            .await
            .unwrap_or_else(|e| panic!("acknowledged account {} is gone: {e}", a.email));
        assert_eq!(user.email, a.email);
        assert!(
            user.credential_epoch >= a.epoch,
            "epoch went back: {a:?} {user:?}"
        );
        let candidates: Vec<String> = [Some(a.password.clone()), a.maybe_password.take()]
            .into_iter()
            .flatten()
            .collect();
        let mut works = None;
        for candidate in &candidates {
            if client
                .verify_password(&a.email, candidate, None)
                .await
                .is_ok()
            {
                works = Some(candidate.clone());
                break;
            }
        }
        let Some(works) = works else {
            panic!(
                "no known password works for {a:?} (acknowledged: {:?})",
                a.password
            );
        };
        if works != a.password {
            // The unacknowledged change had landed.
            a.password = works;
        }
        a.epoch = user.credential_epoch;
        for token in &a.used_tokens {
            let again = client
                .complete_password_reset(token, "a reused token password", None, None)
                .await;
            assert!(
                matches!(again, Err(Error::Api(ApiError::InvalidToken))),
                "a used token was accepted again: {again:?}"
            );
        }
        kept.push(a);
    }
    *accounts = kept;
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill_and_tokens_are_never_reused() {
    let cycles = std::env::var("LATCHKEY_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CYCLES);
    let mut daemon: Daemon = Setup::new()
        .toml(
            "[limits]\nlogin_failures = { free = 100000, max = 100000 }\n\
             token_per_ip = { burst = 100000, per_secs = 1 }",
        )
        .start()
        .await;
    let mut accounts: Vec<Account> = Vec::new();
    let mut acknowledged_total = 0;
    for cycle in 0..cycles {
        let mut shares: Vec<Vec<Account>> = vec![Vec::new(); WORKERS];
        for (i, a) in accounts.drain(..).enumerate() {
            shares[i % WORKERS].push(a);
        }
        let workers: Vec<_> = shares
            .into_iter()
            .enumerate()
            .map(|(w, share)| tokio::spawn(worker(daemon.socket().to_path_buf(), cycle, w, share)))
            .collect();
        tokio::time::sleep(Duration::from_millis(rand::random_range(150..700))).await;
        daemon.kill9().await;
        for w in workers {
            accounts.extend(w.await.expect("worker"));
        }
        // The store must open cleanly after every kill.
        daemon.restart().await;
        let client = daemon.client().await;
        verify(&client, &mut accounts).await;
        acknowledged_total = accounts.len();
    }
    assert!(acknowledged_total > 0, "no account was ever created");
    eprintln!("crash test: {cycles} cycles, {acknowledged_total} accounts checked");
}
