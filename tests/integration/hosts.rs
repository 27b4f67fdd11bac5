//! Several hosts, one truth (issue 15): two or three daemons, each with its own directory and
//! socket as on separate machines, sharing one real PostgreSQL database and one outbox key.
//! These run on PostgreSQL whatever `LK_TEST_BACKEND` says.

use std::collections::HashSet;
use std::time::Duration;

use latchkey_client::{ApiError, EventKind, TokenState, UserRef};
use latchkey_test_support::postgres::{cluster, Cluster, PASSWORD as PG_PASSWORD};
use latchkey_test_support::{
    assert_api_error, free_port, new_user, path_str, run, Daemon, Setup, SmtpSink,
};

use crate::LATCHKEYD;

const PASSWORD: &str = "original password 1";

/// Two daemons on one fresh database.
async fn two_hosts(extra: &str) -> (Daemon, Daemon) {
    let a = Setup::postgres().toml(extra).start().await;
    let b = Setup::another_host(&a).toml(extra).start().await;
    (a, b)
}

/// The token in a reset link.
fn token_of(link: &str) -> String {
    crate::reset::token_of(link)
}

#[tokio::test]
async fn an_account_made_on_one_host_logs_in_on_another_and_its_email_stays_unique() {
    let (a, b) = two_hosts("").await;
    let (ca, cb) = (a.client().await, b.client().await);
    let made = ca
        .create_user(new_user("ada@example.com", PASSWORD))
        .await
        .expect("create_user on host A");
    let logged_in = cb
        .verify_password("ada@example.com", PASSWORD, None)
        .await
        .expect("the account logs in on host B");
    assert_eq!(logged_in, made);
    // The same address in another case or with spaces is the same address on every host.
    assert_api_error(
        cb.create_user(new_user("  ADA@Example.com ", "another password 2"))
            .await,
        ApiError::EmailTaken,
    );
    // Two hosts racing to create one address: exactly one wins.
    let (x, y) = tokio::join!(
        ca.create_user(new_user("grace@example.com", PASSWORD)),
        cb.create_user(new_user("grace@example.com", PASSWORD)),
    );
    let won = [&x, &y].iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{x:?} / {y:?}");
    for lost in [x, y].into_iter().filter(Result::is_err) {
        assert_api_error(lost, ApiError::EmailTaken);
    }
}

#[tokio::test]
async fn a_token_from_one_host_is_used_on_another_once_and_a_password_change_anywhere_kills_it() {
    let (a, b) = two_hosts("").await;
    let c = Setup::another_host(&a).start().await;
    let (ca, cb, cc) = (a.client().await, b.client().await, c.client().await);
    let id = ca
        .create_user(new_user("race@example.com", PASSWORD))
        .await
        .expect("create_user")
        .id;
    let link = ca
        .admin_reset_link(UserRef::Id(id), None)
        .await
        .expect("admin_reset_link on A");
    let token = token_of(&link.link);
    let check = cb
        .check_reset_token(&token, None)
        .await
        .expect("check on B");
    assert_eq!(check.state, TokenState::Valid);
    // Completions racing on the three hosts: exactly one wins.
    let (x, y, z) = tokio::join!(
        ca.complete_password_reset(&token, "password from host a", None, None),
        cb.complete_password_reset(&token, "password from host b", None, None),
        cc.complete_password_reset(&token, "password from host c", None, None),
    );
    let results = [x, y, z];
    let winners: Vec<usize> = (0..3).filter(|i| results[*i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (i, r) in results.iter().enumerate() {
        if let Err(e) = r {
            assert_eq!(e.api(), Some(&ApiError::InvalidToken), "host {i}: {e}");
        }
    }
    let password = [
        "password from host a",
        "password from host b",
        "password from host c",
    ][winners[0]];
    cc.verify_password("race@example.com", password, None)
        .await
        .expect("the winner's password logs in on host C");
    assert_eq!(
        ca.check_reset_token(&token, None)
            .await
            .expect("check")
            .state,
        TokenState::Used
    );
    // A password change on one host kills every token issued on the others.
    let fresh = token_of(
        &ca.admin_reset_link(UserRef::Id(id), None)
            .await
            .expect("admin_reset_link")
            .link,
    );
    cb.set_password(id, "set by an admin on b")
        .await
        .expect("set_password on B");
    assert_eq!(
        cc.check_reset_token(&fresh, None)
            .await
            .expect("check")
            .state,
        TokenState::Invalid
    );
    assert_api_error(
        ca.complete_password_reset(&fresh, "too late for this", None, None)
            .await,
        ApiError::InvalidToken,
    );
}

/// Mail over SMTP to `port`, with retries a second apart and no per-address cooldown.
fn smtp_toml(port: u16, timeout_secs: u64) -> String {
    format!(
        "[limits]\nreset_per_email = {{ burst = 1000, per_secs = 60 }}\n\
         reset_per_ip = {{ burst = 1000, per_secs = 60 }}\n\
         [reset]\nlink_template = \"https://app.example/reset?token={{token}}\"\n\
         [mail]\ntransport = \"smtp\"\nbackoff_base_secs = 1\nbackoff_max_secs = 2\n\
         [mail.smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         timeout_secs = {timeout_secs}\n"
    )
}

#[tokio::test]
async fn mail_queued_on_two_hosts_is_sent_once_each() {
    let sink = SmtpSink::start(free_port()).await;
    let (a, b) = two_hosts(&smtp_toml(sink.port(), 5)).await;
    let (ca, cb) = (a.client().await, b.client().await);
    let mut addresses = Vec::new();
    for i in 0..30 {
        let address = format!("user{i}@example.com");
        ca.create_user(new_user(&address, PASSWORD))
            .await
            .expect("create_user");
        addresses.push(address);
    }
    // Every request through one host or the other; both senders look at the one queue.
    let requests = addresses.iter().enumerate().map(|(i, address)| {
        let client = if i % 2 == 0 { &ca } else { &cb };
        client.request_password_reset(address, None, None)
    });
    for done in futures::future::join_all(requests).await {
        done.expect("request_password_reset");
    }
    sink.wait_for(addresses.len()).await;
    // Long enough for a second sender to have sent anything twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let received = sink.received();
    let ids: HashSet<&str> = received.iter().map(|m| m.header("Message-ID")).collect();
    let to: Vec<&str> = received.iter().map(|m| m.rcpt_tos[0].as_str()).collect();
    assert_eq!(received.len(), addresses.len(), "{to:?}");
    assert_eq!(
        ids.len(),
        addresses.len(),
        "a message was sent twice: {to:?}"
    );
    let unique: HashSet<&str> = to.iter().copied().collect();
    assert_eq!(unique.len(), addresses.len(), "{to:?}");
}

#[tokio::test]
async fn a_host_killed_mid_delivery_leaves_its_mail_to_another_after_the_lease() {
    // Host A delivers to a server that accepts and then never answers, so its delivery is in
    // progress when it is killed; host B delivers to the real sink.
    let tarpit = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let tarpit_port = tarpit.local_addr().expect("addr").port();
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = tarpit.accept().await {
            held.push(socket);
            let _ = accepted_tx.send(()).await;
        }
    });
    let sink = SmtpSink::start(free_port()).await;
    let mut a = Setup::postgres()
        .toml(&smtp_toml(tarpit_port, 1))
        .start()
        .await;
    let ca = a.client().await;
    ca.create_user(new_user("kim@example.com", PASSWORD))
        .await
        .expect("create_user");
    ca.request_password_reset("kim@example.com", None, None)
        .await
        .expect("request_password_reset");
    tokio::time::timeout(Duration::from_secs(10), accepted.recv())
        .await
        .expect("host A starts delivering");
    a.kill9().await;
    let b = Setup::another_host(&a)
        .toml(&smtp_toml(sink.port(), 1))
        .start()
        .await;
    // A's lease is its whole-delivery timeout (4 × 1 s) plus 5 s; B looks at least every 10 s.
    let received = sink.wait_for(1).await;
    assert_eq!(received[0].rcpt_tos, ["kim@example.com"]);
    assert!(received[0]
        .link()
        .starts_with("https://app.example/reset?token="));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.received().len(), 1, "sent twice");
    let outbox = b
        .client()
        .await
        .outbox_list(0, 10)
        .await
        .expect("outbox_list");
    assert!(outbox.is_empty(), "{outbox:?}");
}

#[tokio::test]
async fn a_reader_of_the_event_log_misses_nothing_when_hosts_commit_out_of_order() {
    let (a, b) = two_hosts("").await;
    let (ca, cb) = (a.client().await, b.client().await);
    let database = a.database().expect("on PostgreSQL").to_owned();
    ca.create_user(new_user("first@example.com", PASSWORD))
        .await
        .expect("create_user");
    let seen = ca.events(0, 100).await.expect("events");
    assert_eq!(seen.len(), 1, "{seen:?}");
    let mut cursor = seen[0].seq;
    // A transaction that began first and commits last, as a slow host's would: it appends an
    // event row as a host does (holding the events lock shared until it ends) and stays open
    // while host B commits one of its own.
    let slow = tokio::task::spawn_blocking({
        let database = database.clone();
        move || {
            cluster().psql(
                &database,
                "BEGIN; \
                 INSERT INTO latchkey_events (at, kind, user_id, client_ip) \
                     SELECT extract(epoch from now())::bigint, 'login_failed', NULL, NULL \
                     FROM (SELECT pg_advisory_xact_lock_shared(7809651199139577861)) AS w; \
                 SELECT pg_sleep(3); COMMIT;",
            )
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    cb.create_user(new_user("second@example.com", PASSWORD))
        .await
        .expect("create_user on B, while the slow transaction is open");
    // B's event has committed, but the slow transaction could still commit an older one: the
    // reader is shown nothing until it has, then both, the older first.
    let started = std::time::Instant::now();
    let read = ca.events(cursor, 100).await.expect("events");
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "the read did not wait for the slow transaction: {read:?}"
    );
    slow.await.expect("psql task");
    let kinds: Vec<EventKind> = read.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [EventKind::LoginFailed, EventKind::UserCreated],
        "{read:?}"
    );
    assert!(read[0].seq < read[1].seq && read[0].seq > cursor);
    cursor = read[1].seq;
    assert!(ca.events(cursor, 100).await.expect("events").is_empty());
    // Every host reads the same log in the same order.
    let from_a = ca.events(0, 100).await.expect("events on A");
    let from_b = cb.events(0, 100).await.expect("events on B");
    assert_eq!(from_a, from_b);
    let seqs: Vec<u64> = from_a.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[tokio::test]
async fn many_hosts_starting_at_once_apply_the_schema_once_and_a_newer_schema_is_refused() {
    let first = Setup::postgres();
    let database = first.database().expect("on PostgreSQL").to_owned();
    let store = cluster().store_toml(&database);
    let key = first.dir().join("shared-outbox.key");
    let key_toml = format!("[store]\noutbox_key_file = {:?}\n", path_str(&key));
    let setups = [first, Setup::sled(), Setup::sled()].map(|s| s.toml(&store).toml(&key_toml));
    let daemons = futures::future::join_all(setups.map(Setup::start)).await;
    for daemon in &daemons {
        daemon.client().await.health().await.expect("health");
    }
    // Each migration recorded once, in order, with none missing (version is the key).
    let applied = cluster().psql(
        &database,
        "SELECT count(*), max(version) FROM latchkey_schema",
    );
    let (count, max) = applied.split_once('|').expect("two columns");
    assert!(count == max && count != "0", "{applied}");
    drop(daemons);
    cluster().psql(
        &database,
        "INSERT INTO latchkey_schema (version, applied_at, by_version) VALUES (99, 0, '9.9.9')",
    );
    let late = Setup::sled().toml(&store).toml(&key_toml);
    let config = late.write_config();
    let refused = run(LATCHKEYD, &["--config", path_str(&config)], None).await;
    assert!(
        !refused.status.success(),
        "started on a newer schema\n{refused}"
    );
    refused.assert_stderr_contains("schema version 99");
}

#[tokio::test]
async fn a_host_whose_outbox_key_differs_refuses_to_start_while_mail_is_queued() {
    // Mail that cannot be delivered (nothing listens) stays queued.
    let a = Setup::postgres()
        .toml(&smtp_toml(free_port(), 1))
        .start()
        .await;
    let ca = a.client().await;
    ca.create_user(new_user("lin@example.com", PASSWORD))
        .await
        .expect("create_user");
    ca.request_password_reset("lin@example.com", None, None)
        .await
        .expect("request_password_reset");
    // A second host with its own, freshly made key.
    let database = a.database().expect("on PostgreSQL");
    let b = Setup::sled().toml(&cluster().store_toml(database));
    let config = b.write_config();
    let refused = run(LATCHKEYD, &["--config", path_str(&config)], None).await;
    assert!(
        !refused.status.success(),
        "started with another key\n{refused}"
    );
    refused.assert_stderr_contains("outbox key");
    refused.assert_stderr_contains("queued messages");
    // The mail is still queued, and host A still reads it.
    let queued = ca.outbox_list(0, 10).await.expect("outbox_list");
    assert_eq!(queued.len(), 1, "{queued:?}");
}

#[tokio::test]
async fn calls_answer_unavailable_while_the_database_is_down_and_work_again_when_it_is_back() {
    let own = Cluster::start();
    let database = own.create_database();
    let daemon = Setup::sled()
        .toml(&own.store_toml(&database))
        .toml("[store.postgres]\nconnect_timeout_secs = 2\n")
        .start()
        .await;
    let client = daemon.client().await;
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let made = client
            .create_user(new_user(&format!("before{i}@example.com"), PASSWORD))
            .await
            .expect("create_user");
        acknowledged.push(made);
    }
    own.stop();
    // Calls fail fast with the documented error, the connection stays usable, and health
    // tells why.
    let started = std::time::Instant::now();
    for i in 0..3 {
        assert_api_error(
            client
                .create_user(new_user(&format!("during{i}@example.com"), PASSWORD))
                .await,
            ApiError::Unavailable,
        );
        assert_api_error(
            client.get_user(acknowledged[0].id).await,
            ApiError::Unavailable,
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let mut store = String::new();
    for _ in 0..50 {
        store = client.health().await.expect("health").store;
        if store == "unreachable" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(store, "unreachable");
    own.restart();
    // The pool reconnects by itself; nothing acknowledged was lost.
    let mut back = None;
    for _ in 0..50 {
        match client.get_user(acknowledged[0].id).await {
            Ok(user) => {
                back = Some(user);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    assert_eq!(back.as_ref(), Some(&acknowledged[0]));
    for user in &acknowledged {
        assert_eq!(&client.get_user(user.id).await.expect("get_user"), user);
    }
    client
        .create_user(new_user("after@example.com", PASSWORD))
        .await
        .expect("create_user after the restart");
    let mut store = String::new();
    for _ in 0..50 {
        store = client.health().await.expect("health").store;
        if store == "ok" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(store, "ok");

    // Mid-load: writers keep going while the server stops and starts again. Every write is
    // either acknowledged (and then kept) or refused with Unavailable; none hangs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let client = daemon.client().await;
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let (mut acknowledged, mut refused, mut resumed) = (Vec::new(), 0usize, false);
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let email = format!("load{w}-{i}@example.com");
                i += 1;
                let call = client.create_user(new_user(&email, PASSWORD));
                match tokio::time::timeout(Duration::from_secs(15), call).await {
                    Ok(Ok(user)) => {
                        resumed |= refused > 0;
                        acknowledged.push(user);
                    }
                    Ok(Err(e)) if e.api() == Some(&ApiError::Unavailable) => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Ok(Err(e)) => panic!("{email}: {e}"),
                    Err(_) => panic!("{email}: no answer within 15 s"),
                }
            }
            (acknowledged, refused, resumed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    own.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    own.restart();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut acknowledged, mut refused, mut resumed) = (Vec::new(), 0, 0);
    for writer in writers {
        let (a, r, back) = writer.await.expect("writer task");
        acknowledged.extend(a);
        refused += r;
        resumed += usize::from(back);
    }
    assert!(
        refused > 0,
        "no write was refused: the server never went away under load"
    );
    assert_eq!(
        resumed, 4,
        "not every writer got through again after the restart"
    );
    for user in &acknowledged {
        assert_eq!(&client.get_user(user.id).await.expect("get_user"), user);
    }
    drop(daemon);
    drop(own);
}

#[tokio::test]
async fn killing_one_of_two_hosts_under_load_loses_no_acknowledged_write_and_no_token_works_twice()
{
    let (mut a, b) = two_hosts("").await;
    let cb = b.client().await;
    let mut tokens = Vec::new();
    for i in 0..8 {
        let id = cb
            .create_user(new_user(&format!("owner{i}@example.com"), PASSWORD))
            .await
            .expect("create_user")
            .id;
        let link = cb
            .admin_reset_link(UserRef::Id(id), None)
            .await
            .expect("admin_reset_link");
        tokens.push(token_of(&link.link));
    }
    let mut acknowledged = Vec::new();
    let mut wins: Vec<usize> = vec![0; tokens.len()];
    for round in 0..4 {
        let ca = a.client().await;
        let mut tasks = Vec::new();
        for i in 0..12 {
            let client = if i % 2 == 0 { ca.clone() } else { cb.clone() };
            let email = format!("r{round}u{i}@example.com");
            tasks.push(tokio::spawn(async move {
                client.create_user(new_user(&email, PASSWORD)).await
            }));
        }
        // Each round races two tokens, on both hosts at once.
        let mut racers = Vec::new();
        for t in [2 * round, 2 * round + 1] {
            for client in [ca.clone(), cb.clone()] {
                let token = tokens[t].clone();
                racers.push((
                    t,
                    tokio::spawn(async move {
                        client
                            .complete_password_reset(
                                &token,
                                "a password after the crash",
                                None,
                                None,
                            )
                            .await
                    }),
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        a.kill9().await;
        for task in tasks {
            if let Ok(user) = task.await.expect("create task") {
                acknowledged.push(user);
            }
        }
        for (t, racer) in racers {
            if racer.await.expect("racer task").is_ok() {
                wins[t] += 1;
            }
        }
        a.restart().await;
    }
    assert!(
        wins.iter().all(|w| *w <= 1),
        "a token was accepted twice: {wins:?}"
    );
    assert!(
        acknowledged.len() >= 24,
        "too few writes got through: {}",
        acknowledged.len()
    );
    let ca = a.client().await;
    for user in &acknowledged {
        assert_eq!(&ca.get_user(user.id).await.expect("get_user"), user);
        assert_eq!(&cb.find_user(&user.email).await.expect("find_user"), user);
    }
    for (t, token) in tokens.iter().enumerate() {
        let state = cb
            .check_reset_token(token, None)
            .await
            .expect("check")
            .state;
        if wins[t] == 1 {
            assert_eq!(state, TokenState::Used, "token {t}");
        }
    }
}

#[tokio::test]
async fn the_reset_cooldown_and_the_login_limit_hold_across_hosts() {
    let limits = "[limits.login_failures]\nfree = 3\nfirst_wait_secs = 600\n";
    let (a, b) = two_hosts(limits).await;
    let (ca, cb) = (a.client().await, b.client().await);
    ca.create_user(new_user("ines@example.com", PASSWORD))
        .await
        .expect("create_user");
    // One reset mail per address per minute (the default), whichever host is asked.
    ca.request_password_reset("ines@example.com", Some("198.51.100.1"), None)
        .await
        .expect("first request");
    let again = cb
        .request_password_reset("ines@example.com", Some("198.51.100.2"), None)
        .await;
    assert!(
        matches!(again, Err(ref e) if matches!(e.api(), Some(ApiError::RateLimited { .. }))),
        "{again:?}"
    );
    // And the same for an address with no account: the reply says nothing about accounts.
    cb.request_password_reset("nobody@example.com", None, None)
        .await
        .expect("first request for an unknown address");
    let again = ca
        .request_password_reset("nobody@example.com", None, None)
        .await;
    assert!(
        matches!(again, Err(ref e) if matches!(e.api(), Some(ApiError::RateLimited { .. }))),
        "{again:?}"
    );
    // Three failed logins in a row are free, counted over both hosts...
    for (client, ip) in [
        (&ca, "203.0.113.1"),
        (&cb, "203.0.113.2"),
        (&ca, "203.0.113.3"),
    ] {
        assert_api_error(
            client
                .verify_password("ines@example.com", "wrong password", Some(ip))
                .await,
            ApiError::InvalidCredentials,
        );
    }
    // ...then the guessers wait on every host, even with the right password: an address
    // that failed on one host is unclean on the other.
    let fourth = cb
        .verify_password("ines@example.com", PASSWORD, Some("203.0.113.1"))
        .await;
    assert!(
        matches!(fourth, Err(ref e) if matches!(e.api(), Some(ApiError::RateLimited { .. }))),
        "{fourth:?}"
    );
    // The owner from a clean address gets in on either, and her success clears the count
    // for both.
    cb.verify_password("ines@example.com", PASSWORD, Some("203.0.113.4"))
        .await
        .expect("the owner from a clean address");
    assert_api_error(
        ca.verify_password("ines@example.com", "wrong password", Some("203.0.113.1"))
            .await,
        ApiError::InvalidCredentials,
    );
    // The database keeps only keyed hashes, never the addresses the limits were kept for:
    // two reset buckets, and failures for the account and for the three guessing addresses.
    let database = a.database().expect("on PostgreSQL");
    let stored = cluster().psql(database, "SELECT count(*) FROM latchkey_limits");
    assert_eq!(stored, "2");
    let stored = cluster().psql(
        database,
        "SELECT string_agg(kind || ':' || failures, ',' ORDER BY kind, failures) \
         FROM latchkey_login_failures",
    );
    assert_eq!(stored, "1:1,2:1,2:1,2:2");
    let keys = cluster().psql(
        database,
        "SELECT bool_and(length(key) = 32) FROM latchkey_login_failures",
    );
    assert_eq!(keys, "t", "every key a 32-byte keyed hash");
    let dump = String::from_utf8_lossy(&cluster().dump(database)).into_owned();
    assert!(
        !dump.contains("nobody@example.com"),
        "an address in the limits tables"
    );
}

#[tokio::test]
async fn over_tcp_the_daemon_checks_the_servers_certificate_and_reads_its_password_from_a_file() {
    let cluster = cluster();
    let database = cluster.create_database();
    let setup = Setup::sled();
    let password_file = setup.dir().join("db-password");
    std::fs::write(&password_file, format!("{PG_PASSWORD}\n")).expect("write the password");
    let tcp = |tls: &str, ca: &str, password: &str| {
        format!(
            "[store]\nbackend = \"postgres\"\n[store.postgres]\nhost = \"127.0.0.1\"\n\
             port = {}\ndatabase = {database:?}\nuser = \"latchkey\"\ntls = {tls:?}\n{ca}\
             password_file = {password:?}\n",
            cluster.port()
        )
    };
    let ca = format!("ca_file = {:?}\n", path_str(&cluster.ca_file()));
    let good = tcp("verify-full", &ca, path_str(&password_file));
    let daemon = setup.toml(&good).start().await;
    let client = daemon.client().await;
    client
        .create_user(new_user("tls@example.com", PASSWORD))
        .await
        .expect("create_user over TLS");
    daemon.assert_log_lacks(&[PG_PASSWORD]);

    // A certificate from another CA is refused, and so is a wrong password: the daemon says
    // why and does not start.
    let other = Setup::sled();
    let other_ca = latchkey_test_support::smtp::make_certificates(other.dir())
        .await
        .ca;
    let wrong_ca = format!("ca_file = {:?}\n", path_str(&other_ca));
    let wrong_password = other.dir().join("wrong-password");
    std::fs::write(&wrong_password, "not the password").expect("write");
    for (config, expected) in [
        (
            tcp("verify-full", &wrong_ca, path_str(&password_file)),
            "certificate",
        ),
        (
            tcp("verify-full", &ca, path_str(&wrong_password)),
            "password authentication failed",
        ),
    ] {
        let setup = Setup::sled().toml(&config);
        let path = setup.write_config();
        let refused = run(LATCHKEYD, &["--config", path_str(&path)], None).await;
        assert!(
            !refused.status.success(),
            "started with {config}\n{refused}"
        );
        refused.assert_stderr_contains(expected);
        assert!(!refused.stderr.contains(PG_PASSWORD), "{refused}");
    }
}

/// Waits up to `within` for a datagram on `notify` that contains `text`.
fn notified(notify: &std::os::unix::net::UnixDatagram, text: &str, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    let mut buf = [0u8; 512];
    while std::time::Instant::now() < deadline {
        if let Ok(n) = notify.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).contains(text) {
                return true;
            }
        }
    }
    false
}

#[tokio::test]
async fn the_watchdog_is_pinged_while_the_database_is_down_but_not_while_it_hangs() {
    let own = Cluster::start();
    let database = own.create_database();
    let setup = Setup::sled()
        .toml(&own.store_toml(&database))
        .toml("[store.postgres]\nconnect_timeout_secs = 1\n");
    let notify_path = setup.dir().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("bind");
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let daemon = setup
        .env("NOTIFY_SOCKET", path_str(&notify_path))
        .env("WATCHDOG_USEC", "1000000")
        .start()
        .await;
    let client = daemon.client().await;
    assert!(notified(&notify, "WATCHDOG=1", Duration::from_secs(5)));
    // Down: refused connections are the database's state; restarting us would not help.
    own.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    while notify.recv(&mut [0u8; 512]).is_ok() {}
    assert!(
        notified(&notify, "WATCHDOG=1", Duration::from_secs(3)),
        "no ping while the database was down\n{}",
        daemon.log()
    );
    assert_eq!(client.health().await.expect("health").store, "unreachable");
    own.restart();
    // Hung: the probe gets no answer within half the watchdog interval, and the pings stop.
    let mut ok = String::new();
    for _ in 0..50 {
        ok = client.health().await.expect("health").store;
        if ok == "ok" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ok, "ok");
    own.pause();
    tokio::time::sleep(Duration::from_secs(1)).await;
    while notify.recv(&mut [0u8; 512]).is_ok() {}
    let pinged = notified(&notify, "WATCHDOG=1", Duration::from_secs(3));
    let health = client.health().await.expect("health").store;
    own.resume();
    assert!(!pinged, "pinged while the database hung\n{}", daemon.log());
    assert_eq!(health, "stalled");
    assert!(
        notified(&notify, "WATCHDOG=1", Duration::from_secs(5)),
        "no ping once the database answered again"
    );
}

#[tokio::test]
async fn token_sweeps_and_event_trimming_work_on_the_shared_database() {
    let upkeep = "[reset]\nremember_secs = 0\nsweep_interval_secs = 1\n[events]\nmax_events = 5\n";
    let (a, b) = two_hosts(upkeep).await;
    let (ca, cb) = (a.client().await, b.client().await);
    let database = a.database().expect("on PostgreSQL").to_owned();
    // Accounts first (each costs a hash), then their one-second links in a quick run; the
    // links expire and are swept while the next steps run, so their number is not counted
    // here: each link answered is a stored token.
    let mut ids = Vec::new();
    for i in 0..6 {
        let client = if i % 2 == 0 { &ca } else { &cb };
        let user = client
            .create_user(new_user(&format!("sweep{i}@example.com"), PASSWORD))
            .await
            .expect("create_user");
        ids.push(user.id);
    }
    for (i, id) in ids.into_iter().enumerate() {
        let client = if i % 2 == 0 { &ca } else { &cb };
        client
            .admin_reset_link(UserRef::Id(id), Some(1))
            .await
            .expect("admin_reset_link");
    }
    // Both hosts sweep every second; one at a time takes the work (an advisory lock).
    let mut left = (String::new(), String::new());
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Numbering happens on read; read so that trimming has numbered events to trim.
        ca.events(0, 100).await.expect("events");
        left = (
            cluster().psql(&database, "SELECT count(*) FROM latchkey_tokens"),
            cluster().psql(&database, "SELECT count(*) FROM latchkey_events"),
        );
        if left.0 == "0" && left.1 == "5" {
            break;
        }
    }
    assert_eq!(left, ("0".to_owned(), "5".to_owned()));
    // The newest five stay, in order, for every host.
    let kept = cb.events(0, 100).await.expect("events");
    assert_eq!(kept.len(), 5, "{kept:?}");
    assert_eq!(kept, ca.events(0, 100).await.expect("events"));
}
