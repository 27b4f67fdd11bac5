//! The foundation's behaviours (issue 2): accounts, the password policy, roles, framing,
//! shutdown and durability, the CLI and the configuration, each checked against a real daemon.

use std::time::Duration;

use latchkey_client::{ApiError, CallerRole, Error, TokenState, User, UserRef, UserStatus};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use latchkey_test_support::{
    another_uid, api_error, assert_api_error, assert_closed_by_daemon, new_user, our_uid, run,
    Daemon, Setup,
};

use crate::LATCHKEYD;

/// A password that passes the policy; tests that need one but do not care which use it.
const PASSWORD: &str = "correct horse battery staple";

#[tokio::test]
async fn account_round_trip_create_get_find_login_change_disable_enable_delete() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    let new_password = "a brand new passphrase";

    let created = client
        .create_user(latchkey_client::NewUser {
            email: "  Ada@Example.COM ".into(),
            name: "Ada Lovelace".into(),
            password: PASSWORD.into(),
            role: Some("editor".into()),
            locale: Some("en_GB".into()),
        })
        .await
        .expect("create_user");
    assert_eq!(created.email, "ada@example.com");
    assert_eq!(created.name, "Ada Lovelace");
    assert_eq!(created.role, "editor");
    assert_eq!(created.locale.as_deref(), Some("en-GB"));
    assert_eq!(created.status, UserStatus::Active);
    assert_eq!(created.credential_epoch, 0);

    assert_eq!(
        client.get_user(created.id).await.expect("get_user"),
        created
    );
    for variant in [
        "ada@example.com",
        "ADA@EXAMPLE.COM",
        " Ada@Example.com\t",
        "\nada@EXAMPLE.com  ",
    ] {
        let found = client.find_user(variant).await;
        assert_eq!(found.expect(variant), created, "find_user({variant:?})");
    }
    let logged_in = client.verify_password("ADA@example.com ", PASSWORD, Some("203.0.113.7"));
    assert_eq!(logged_in.await.expect("verify_password"), created);

    let changed = client
        .change_password(created.id, PASSWORD, new_password)
        .await
        .expect("change_password");
    assert_eq!(changed.user_id, created.id);
    assert_eq!(changed.credential_epoch, 1);
    assert_api_error(
        client
            .verify_password("ada@example.com", PASSWORD, None)
            .await,
        ApiError::InvalidCredentials,
    );
    let after_change = client
        .verify_password("ada@example.com", new_password, None)
        .await
        .expect("login with the new password");
    assert_eq!(after_change.credential_epoch, 1);
    assert_eq!(
        client
            .get_user(created.id)
            .await
            .expect("get_user")
            .credential_epoch,
        1
    );

    let disabled = client.set_status(created.id, UserStatus::Disabled).await;
    assert_eq!(disabled.expect("disable").status, UserStatus::Disabled);
    assert_api_error(
        client
            .verify_password("ada@example.com", new_password, None)
            .await,
        ApiError::InvalidCredentials,
    );
    let enabled = client.set_status(created.id, UserStatus::Active).await;
    assert_eq!(enabled.expect("enable").status, UserStatus::Active);
    client
        .verify_password("ada@example.com", new_password, None)
        .await
        .expect("login after enabling");

    client.delete_user(created.id).await.expect("delete_user");
    assert_api_error(client.get_user(created.id).await, ApiError::NotFound);
    assert_api_error(
        client.find_user("ada@example.com").await,
        ApiError::NotFound,
    );
    assert_api_error(client.delete_user(created.id).await, ApiError::NotFound);
    assert_api_error(
        client
            .verify_password("ada@example.com", new_password, None)
            .await,
        ApiError::InvalidCredentials,
    );

    daemon.assert_log_lacks(&[PASSWORD, new_password]);
}

#[tokio::test]
async fn duplicate_email_is_refused_whatever_its_case_or_spacing() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    client
        .create_user(new_user("grace@example.com", PASSWORD))
        .await
        .expect("first create_user");
    for variant in [
        "grace@example.com",
        "GRACE@example.com",
        "  Grace@Example.Com\n",
    ] {
        assert_api_error(
            client.create_user(new_user(variant, PASSWORD)).await,
            ApiError::EmailTaken,
        );
    }

    // Two creates of one address at the same moment: exactly one wins.
    let (a, b) = tokio::join!(
        client.create_user(new_user("twice@example.com", PASSWORD)),
        client.create_user(new_user("TWICE@example.com", PASSWORD)),
    );
    let taken = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Err(Error::Api(ApiError::EmailTaken))))
        .count();
    assert!(
        taken == 1 && (a.is_ok() || b.is_ok()),
        "expected one Ok and one EmailTaken\n     got: {a:?}\n     and: {b:?}"
    );
}

#[tokio::test]
async fn password_length_is_counted_in_code_points_not_bytes() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    let weak = |result: Result<User, Error>| {
        let e = api_error(result);
        assert!(
            matches!(e, ApiError::WeakPassword { .. }),
            "expected: WeakPassword\n     got: {e:?}"
        );
    };
    weak(
        client
            .create_user(new_user("a@example.com", "seven77"))
            .await,
    );
    weak(
        client
            .create_user(new_user("b@example.com", &"x".repeat(257)))
            .await,
    );
    // 257 two-byte characters are 514 bytes, under the byte cap: only the character count
    // refuses them.
    weak(
        client
            .create_user(new_user("c@example.com", &"é".repeat(257)))
            .await,
    );

    // 256 two-byte characters are 512 bytes and exactly the limit.
    let long = "é".repeat(256);
    let user = client
        .create_user(new_user("d@example.com", &long))
        .await
        .expect("256 characters are allowed");
    let same = client.verify_password("d@example.com", &long, None).await;
    assert_eq!(same.expect("login with 256 characters").id, user.id);
}

#[tokio::test]
async fn nfkc_equivalent_password_logs_in() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    // Full-width letters and digits, as an East Asian keyboard may type them.
    let full_width = "ｐａｓｓ１２３４５６７８";
    let user = client
        .create_user(new_user("kana@example.com", full_width))
        .await
        .expect("create_user");
    for typed in ["pass12345678", full_width] {
        let same = client
            .verify_password("kana@example.com", typed, None)
            .await;
        assert_eq!(same.expect(typed).id, user.id, "login with {typed:?}");
    }
    assert_api_error(
        client
            .verify_password("kana@example.com", "pass12345679", None)
            .await,
        ApiError::InvalidCredentials,
    );
}

#[tokio::test]
async fn wrong_password_unknown_email_and_disabled_account_are_indistinguishable() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    let user = client
        .create_user(new_user("alan@example.com", PASSWORD))
        .await
        .expect("create_user");
    let off = client
        .create_user(new_user("off@example.com", PASSWORD))
        .await
        .expect("create_user");
    client
        .set_status(off.id, UserStatus::Disabled)
        .await
        .expect("set_status");
    let right = client
        .verify_password("alan@example.com", PASSWORD, None)
        .await;
    assert_eq!(right.expect("the right password logs in").id, user.id);

    for (what, email, password) in [
        ("wrong password", "alan@example.com", "not the password"),
        ("unknown email", "nobody@example.com", PASSWORD),
        ("disabled account", "off@example.com", PASSWORD),
        ("implausible email", "not an address", PASSWORD),
    ] {
        let result = client.verify_password(email, password, None).await;
        assert_eq!(
            result.as_ref().map_err(Error::api).err(),
            Some(Some(&ApiError::InvalidCredentials)),
            "{what}: expected Err(Api(InvalidCredentials)), got {result:?}"
        );
    }
}

/// Issue 17: a peer with no role used to see a bare reset; now its first call is answered
/// with the reason, naming its uid and the settings, before the connection closes.
#[tokio::test]
async fn peer_without_a_role_is_told_why_and_disconnected() {
    let daemon = Setup::new()
        .toml(&format!(
            "[auth]\nadmin_uids = [{}]\napp_uids = []\napp_gids = []\n",
            another_uid()
        ))
        .start()
        .await;
    let refusals = || daemon.log().matches("refused connection").count();
    let before = refusals();
    let client = daemon.client().await;
    for attempt in ["first call", "after reconnecting"] {
        match client.health().await {
            Err(Error::NoRole { detail }) => {
                assert!(
                    detail.contains(&format!("uid {}", our_uid()))
                        && detail.contains("auth.app_gids"),
                    "{attempt}: {detail}"
                );
            }
            other => panic!("{attempt}: expected Err(NoRole {{ .. }})\n     got: {other:?}"),
        }
    }
    // Log lines are written by a background thread: give it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while refusals() <= before && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        refusals() > before,
        "expected a \"refused connection\" line for our uid {} in the daemon log",
        our_uid()
    );
}

/// A daemon whose admin is another uid, with `auth` (lines of `[auth]`) deciding our role.
async fn with_auth(auth: &str) -> Daemon {
    Setup::new()
        .toml(&format!(
            "[auth]\nadmin_uids = [{}]\n{auth}\n",
            another_uid()
        ))
        .start()
        .await
}

/// Issue 17: a scraper or probe gets the monitor role: health and metrics, nothing else.
#[tokio::test]
async fn a_monitor_may_read_health_and_metrics_and_nothing_else() {
    let daemon = with_auth(&format!(
        "app_uids = []\napp_gids = []\nmonitor_uids = [{}]",
        our_uid()
    ))
    .await;
    let client = daemon.client().await;
    let health = client.health().await.expect("health");
    assert_eq!(health.caller_role, CallerRole::Monitor);
    let metrics = client.metrics().await.expect("metrics");
    assert!(metrics.contains("latchkey_calls_total"), "{metrics}");
    assert_api_error(client.get_user(1).await, ApiError::Forbidden);
    assert_api_error(
        client.find_user("ada@example.com").await,
        ApiError::Forbidden,
    );
    assert_api_error(
        client
            .request_password_reset("ada@example.com", None, None)
            .await,
        ApiError::Forbidden,
    );
    assert_api_error(client.events(0, 10).await, ApiError::Forbidden);
    assert_api_error(
        client
            .create_user(new_user("mon@example.com", PASSWORD))
            .await,
        ApiError::Forbidden,
    );
}

#[tokio::test]
async fn app_caller_cannot_use_admin_methods() {
    let daemon = with_auth(&format!("app_uids = [{}]", our_uid())).await;
    let client = daemon.client().await;
    let health = client.health().await.expect("health");
    assert_eq!(health.caller_role, CallerRole::App);
    // What a client checks before calling a method a daemon may be too old for (issue 17).
    assert_eq!(health.protocol, latchkey_client::PROTOCOL_VERSION);
    assert_eq!(health.methods, latchkey_client::METHODS);
    let user = client
        .create_user(new_user("app@example.com", PASSWORD))
        .await
        .expect("apps may create users");

    assert_api_error(
        client.set_status(user.id, UserStatus::Disabled).await,
        ApiError::Forbidden,
    );
    assert_api_error(client.delete_user(user.id).await, ApiError::Forbidden);
    assert_eq!(client.get_user(user.id).await.expect("get_user"), user);
}

/// Sends `bytes` on a raw connection and checks that the daemon closes that connection while
/// a well-behaved client on another connection is served before and after.
async fn assert_bad_frame_closes_only_its_connection(bytes: &[u8]) {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    client.health().await.expect("health before the bad frame");

    let mut raw = UnixStream::connect(daemon.socket()).await.expect("connect");
    raw.write_all(bytes).await.expect("write the bad frame");
    assert_closed_by_daemon(&mut raw).await;

    client.health().await.expect("health after the bad frame");
    let fresh = daemon.client().await;
    fresh.health().await.expect("health on a new connection");
}

#[tokio::test]
async fn oversized_frame_closes_only_that_connection() {
    // A length prefix claiming 1 MiB, over the default 64 KiB limit.
    assert_bad_frame_closes_only_its_connection(&(1u32 << 20).to_be_bytes()).await;
}

#[tokio::test]
async fn malformed_frame_closes_only_that_connection() {
    let garbage = b"{this is not json";
    let mut frame = u32::try_from(garbage.len())
        .expect("short")
        .to_be_bytes()
        .to_vec();
    frame.extend_from_slice(garbage);
    assert_bad_frame_closes_only_its_connection(&frame).await;
}

#[tokio::test]
async fn sigterm_finishes_calls_in_flight() {
    // One hash at a time: the eight creates queue behind each other for a few hundred
    // milliseconds, so the signal surely arrives while most of them are running or waiting.
    let mut daemon = Setup::new()
        .toml("[passwords]\nmax_concurrent_hashes = 1\n")
        .start()
        .await;
    let client = daemon.client().await;
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .create_user(new_user(&format!("inflight{i}@example.com"), PASSWORD))
                    .await
            })
        })
        .collect();
    // Wait until the daemon holds all eight (finished, hashing or queued for a hash), so the
    // signal lands while they are in flight and not before they were even sent.
    let admin = daemon.client().await;
    let metric = |text: &str, name: &str| -> usize {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = admin.metrics().await.expect("metrics");
        let done = metric(
            &text,
            r#"latchkey_calls_total{method="create_user",outcome="ok"}"#,
        );
        let queued = metric(&text, "latchkey_hash_queue_depth");
        if done + queued + 1 >= 8 || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let status = daemon.terminate().await;

    let mut created = Vec::new();
    for (i, call) in calls.into_iter().enumerate() {
        let result = call.await.expect("the call task panicked");
        created.push(result.unwrap_or_else(|e| panic!("call {i} in flight at SIGTERM: {e:?}")));
    }
    assert!(
        status.success(),
        "latchkeyd exited with {status} on SIGTERM"
    );
    // Otherwise the test proved nothing: the calls must have finished after shutdown began.
    let log = daemon.log();
    let after_signal = log
        .split_once("shutting down")
        .map_or(0, |(_, after)| after.matches("\"create_user\"").count());
    assert!(
        after_signal > 0,
        "expected create_user calls to finish after \"shutting down\" in the daemon log"
    );

    daemon.restart().await;
    let client = daemon.client().await;
    for user in created {
        let after_restart = client.get_user(user.id).await;
        assert_eq!(after_restart.expect("get_user after restart"), user);
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let mut daemon = Daemon::start().await;
    let client = daemon.client().await;
    let mut created = Vec::new();
    for i in 0..3 {
        let user = client.create_user(new_user(&format!("crash{i}@example.com"), PASSWORD));
        created.push(user.await.expect("create_user"));
    }
    let disabled = client.set_status(created[0].id, UserStatus::Disabled).await;
    created[0] = disabled.expect("set_status");
    daemon.kill9().await;

    daemon.restart().await;
    assert!(
        daemon.database().is_some() || daemon.data_dir().join("db").is_dir(),
        "expected the store under the configured data directory"
    );
    let client = daemon.client().await;
    for user in &created {
        let after_crash = client.get_user(user.id).await;
        assert_eq!(&after_crash.expect("get_user after kill -9"), user);
    }
    // Ids are never reused, not even across a crash.
    let next = client.create_user(new_user("after-crash@example.com", PASSWORD));
    let next = next.await.expect("create_user after kill -9");
    assert!(
        created.iter().all(|user| user.id != next.id),
        "expected a new id\n     got: {} (ids before the crash: {:?})",
        next.id,
        created.iter().map(|u| u.id).collect::<Vec<_>>()
    );
}

/// Found while writing these tests: the daemon colours its log with terminal escape codes even
/// when stderr is a file or the journal, so `outcome="ok"` cannot be grepped for.
#[tokio::test]
async fn log_written_to_a_file_has_no_terminal_escape_codes() {
    let daemon = Daemon::start().await;
    daemon.client().await.health().await.expect("health");
    daemon.wait_for_log("ready").await;
    let log = daemon.log();
    if let Some(line) = log.lines().find(|line| line.contains('\x1b')) {
        panic!("expected plain text in a log that is not a terminal\n     got: {line:?}");
    }
}

/// Issue 8: a line per health check or token check flooded the journal and cost a fifth of
/// such a call's throughput, so successful reads are logged at debug. What an operator audits
/// (writes, logins, refusals, tokens that do not check out) stays at info.
#[tokio::test]
async fn writes_logins_refusals_and_bad_tokens_are_logged_at_info_but_successful_reads_are_not() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    client.health().await.expect("health");
    let user = client
        .create_user(new_user("quiet@example.com", PASSWORD))
        .await
        .expect("create_user");
    client.get_user(user.id).await.expect("get_user");
    let link = client
        .admin_reset_link(UserRef::Id(user.id), None)
        .await
        .expect("admin_reset_link");
    let token = crate::reset::token_of(&link.link);
    let valid = client.check_reset_token(&token, None).await;
    assert_eq!(valid.map(|c| c.state).ok(), Some(TokenState::Valid));
    assert_api_error(
        client
            .verify_password("quiet@example.com", "the wrong password", None)
            .await,
        ApiError::InvalidCredentials,
    );
    // The lines are written in call order: once the refused login's line is there, the
    // lines of the calls before it are too.
    daemon.wait_for_log(r#"method="verify_password""#).await;
    let log = daemon.log();
    for logged in [r#"method="create_user""#, r#"method="admin_reset_link""#] {
        assert!(log.contains(logged), "expected {logged} in the log\n{log}");
    }
    for quiet in [
        r#"method="health""#,
        r#"method="get_user""#,
        r#"method="check_reset_token""#,
    ] {
        assert!(!log.contains(quiet), "expected no {quiet} at info\n{log}");
    }
    // A token that does not check out is logged.
    let mut forged = token.clone().into_bytes();
    let at = forged.len() - 5;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("a token is ASCII");
    let invalid = client.check_reset_token(&forged, None).await;
    assert_eq!(invalid.map(|c| c.state).ok(), Some(TokenState::Invalid));
    daemon.wait_for_log(r#"method="check_reset_token""#).await;
}

#[tokio::test]
async fn missing_config_file_is_named() {
    let setup = Setup::new();
    let missing = setup.dir().join("missing.toml");
    let missing = missing.to_str().expect("UTF-8 path");
    let result = run(LATCHKEYD, &["--config", missing], None).await;
    assert!(!result.status.success(), "expected a failure\n{result}");
    result.assert_stderr_contains(missing);
}

#[tokio::test]
async fn unknown_config_key_is_named() {
    let setup = Setup::new().toml("[server]\nsocket_mdoe = \"0600\"\n");
    crate::assert_refuses_to_start(&setup, &[], "socket_mdoe").await;
}

#[tokio::test]
async fn check_config_prints_the_effective_configuration_as_toml() {
    let setup = Setup::new().toml("[server]\nmax_connections = 7\n");
    let config = setup.write_config();
    let args = [
        "--config",
        config.to_str().expect("UTF-8"),
        "--check-config",
    ];
    let result = run(LATCHKEYD, &args, None).await;
    result.assert_success();
    let printed: toml::Table = result
        .stdout
        .parse()
        .unwrap_or_else(|e| panic!("--check-config did not print TOML: {e}\n{result}"));
    let socket = setup.dir().join("latchkey.sock");
    assert_eq!(
        printed["server"]["socket"].as_str(),
        socket.to_str(),
        "{result}"
    );
    assert_eq!(
        printed["server"]["max_connections"].as_integer(),
        Some(7),
        "{result}"
    );
    assert_eq!(
        printed["passwords"]["memory_kib"].as_integer(),
        Some(19456),
        "{result}"
    );
}

/// Issue 19, item 12: a failed login's event was written but never flushed on its own, so a
/// crash before the next durable write erased the trace of a guessing attempt.
#[tokio::test]
async fn a_failed_login_is_in_the_event_log_after_a_crash() {
    let mut daemon = Daemon::start().await;
    let client = daemon.client().await;
    let ada = client
        .create_user(new_user("ada@example.com", PASSWORD))
        .await
        .expect("create_user");
    assert_api_error(
        client
            .verify_password("ada@example.com", "a wrong guess", Some("198.51.100.4"))
            .await,
        ApiError::InvalidCredentials,
    );
    // The reply does not wait for the flush; the flush follows within milliseconds. A
    // second is far beyond that, and nothing else writes meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    daemon.kill9().await;
    daemon.restart().await;
    let events = daemon.client().await.events(0, 100).await.expect("events");
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.kind == latchkey_client::EventKind::LoginFailed)
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(failed[0].user_id, Some(ada.id));
    assert_eq!(failed[0].client_ip.as_deref(), Some("198.51.100.4"));
}

/// Issue 19, item 11: `create_user` had no rate limit and no `client_ip`. Sign-ups are now
/// counted per client IP once every field has passed; calls without one, as older clients
/// send them, are not limited per IP.
#[tokio::test]
async fn sign_ups_are_limited_per_client_ip() {
    let daemon = Setup::new()
        .toml("[limits]\nsignup_per_ip = { burst = 2, per_secs = 3600 }")
        .start()
        .await;
    let client = daemon.client().await;
    let ip = Some("198.51.100.20");
    // A refused sign-up takes no cell.
    assert_api_error(
        client
            .create_user_from(new_user("not an address", PASSWORD), ip)
            .await,
        ApiError::InvalidEmail,
    );
    for n in 0..2 {
        client
            .create_user_from(new_user(&format!("signup{n}@example.com"), PASSWORD), ip)
            .await
            .expect("within the limit");
    }
    assert!(matches!(
        api_error(
            client
                .create_user_from(new_user("signup2@example.com", PASSWORD), ip)
                .await
        ),
        ApiError::RateLimited { retry_after_secs } if retry_after_secs > 0
    ));
    assert_eq!(
        api_error(client.find_user("signup2@example.com").await),
        ApiError::NotFound,
        "the refused sign-up created nothing"
    );
    client
        .create_user_from(
            new_user("signup2@example.com", PASSWORD),
            Some("198.51.100.21"),
        )
        .await
        .expect("another address has its own cell");
    client
        .create_user(new_user("signup3@example.com", PASSWORD))
        .await
        .expect("no client_ip, no per-IP limit");
    assert_api_error(
        client
            .create_user_from(new_user("signup4@example.com", PASSWORD), Some("not an ip"))
            .await,
        ApiError::InvalidInput {
            field: "client_ip".into(),
            reason: "not an IPv4 or IPv6 address".into(),
        },
    );
}
