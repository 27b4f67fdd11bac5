//! Bad input of every kind (issue 7): malformed and hostile frames, huge and odd field values,
//! slow clients. A request that cannot run gets an error for its id (issue 17); a frame that
//! is not JSON closes its own connection only; the daemon keeps serving
//! everyone else and the store does not change.

use std::time::Duration;

use latchkey_client::{
    ApiError, Client, Event, EventKind, LatchkeyRequest, NewUser, TokenState, User,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use latchkey_test_support::{api_error, assert_closed_by_daemon, new_user, Daemon, Setup};

/// A request frame's JSON exactly as the Rust client would send it.
fn request_json(id: u64, message: LatchkeyRequest) -> String {
    let request = tarpc::ClientMessage::Request(tarpc::Request {
        context: tarpc::context::current(),
        id,
        message,
    });
    serde_json::to_string(&request).expect("requests serialise")
}

/// `body` behind its 4-byte big-endian length.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// Reads one reply frame's JSON, failing if none comes within 10 s.
async fn read_reply(stream: &mut UnixStream) -> serde_json::Value {
    let read = async {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        stream.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    };
    let body = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a reply within 10 s")
        .expect("a whole reply frame");
    serde_json::from_slice(&body).expect("the reply is JSON")
}

/// What the store holds, as seen by an admin: users and events.
async fn snapshot(client: &Client) -> (Vec<User>, Vec<Event>) {
    let users = client.list_users(0, 1000).await.expect("list_users");
    let events = client.events(0, 1000).await.expect("events");
    (users, events)
}

/// A daemon with one account, an admin client, and what the store held before the test.
async fn with_bystander() -> (Daemon, Client, (Vec<User>, Vec<Event>)) {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    client
        .create_user(new_user("bystander@example.com", "bystander password"))
        .await
        .expect("create");
    let before = snapshot(&client).await;
    (daemon, client, before)
}

#[tokio::test]
async fn frames_that_are_not_json_close_only_their_own_connection_and_change_nothing() {
    let (daemon, client, before) = with_bystander().await;
    let valid = request_json(1, LatchkeyRequest::Health {});
    let mut invalid_utf8 = valid.clone().into_bytes();
    let at = invalid_utf8.len() / 2;
    invalid_utf8[at] = 0xff;
    let with_nul = valid.replacen('{', "{\0", 1);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("malformed JSON", frame(b"{\"Request\": {")),
        ("empty frame", frame(b"")),
        ("invalid UTF-8", frame(&invalid_utf8)),
        ("NUL byte in the JSON", frame(with_nul.as_bytes())),
        ("a length of 4 GiB", vec![0xff, 0xff, 0xff, 0xff, b'{']),
    ];
    for (what, bytes) in cases {
        let mut raw = UnixStream::connect(daemon.socket()).await.expect("connect");
        raw.write_all(&bytes).await.expect("write");
        assert_closed_by_daemon(&mut raw).await;
        // Everyone else is still served.
        client
            .health()
            .await
            .unwrap_or_else(|e| panic!("after {what}: {e}"));
    }
    // A frame cut off by the client's own disconnect is simply dropped.
    let mut raw = UnixStream::connect(daemon.socket()).await.expect("connect");
    let whole = frame(request_json(1, LatchkeyRequest::DeleteUser { id: 1 }).as_bytes());
    raw.write_all(&whole[..whole.len() / 2])
        .await
        .expect("write");
    drop(raw);
    client.health().await.expect("after a truncated frame");
    assert_eq!(snapshot(&client).await, before, "the store changed");
}

/// Issue 17: an unknown method (a newer client talking to an older daemon), a missing or
/// mistyped argument, an absent deadline used to close the connection and fail every call in
/// flight on it. Now each gets a server error for its own id, and the connection serves on.
#[tokio::test]
async fn a_request_that_cannot_run_gets_an_error_for_its_id_and_the_connection_serves_on() {
    let (daemon, client, before) = with_bystander().await;
    let valid = request_json(1, LatchkeyRequest::Health {});
    let deadline = valid
        .split("\"deadline\":")
        .nth(1)
        .and_then(|rest| rest.split_once('}'))
        .map(|(d, _)| format!("\"deadline\":{d}}},"))
        .expect("the deadline");
    let mut raw = UnixStream::connect(daemon.socket()).await.expect("connect");
    // A login first: it hashes for milliseconds, so it is still running while the bad
    // frames behind it are read, and must still get its reply.
    let login = request_json(
        100,
        LatchkeyRequest::VerifyPassword {
            email: "bystander@example.com".into(),
            password: "bystander password".into(),
            client_ip: None,
        },
    );
    let cases: Vec<(u64, &str, String, u64)> = vec![
        (
            101,
            "unknown method",
            valid
                .replace("\"Health\"", "\"DropAllTables\"")
                .replace("\"id\":1", "\"id\":101"),
            0,
        ),
        (
            102,
            "wrong argument type",
            request_json(102, LatchkeyRequest::GetUser { id: 1 })
                .replace("\"id\":1}", "\"id\":\"one\"}"),
            11,
        ),
        (
            103,
            "missing argument",
            request_json(103, LatchkeyRequest::GetUser { id: 1 }).replace("{\"id\":1}", "{}"),
            11,
        ),
        (
            104,
            "absent deadline",
            valid
                .replace(&deadline, "")
                .replace("\"id\":1", "\"id\":104"),
            11,
        ),
        (
            105,
            "a method that is not an object",
            valid
                .replace("{\"Health\":{}}", "[\"Health\"]")
                .replace("\"id\":1", "\"id\":105"),
            11,
        ),
    ];
    raw.write_all(&frame(login.as_bytes()))
        .await
        .expect("write");
    for (_, what, body, _) in &cases {
        assert!(!body.contains("\"id\":1,"), "{what}: {body}");
        raw.write_all(&frame(body.as_bytes())).await.expect("write");
    }
    // JSON that is no request at all has no id to answer: it is dropped, and the connection
    // still serves the next call.
    raw.write_all(&frame(b"[1, 2, 3]")).await.expect("write");
    raw.write_all(&frame(valid.replace("\"id\":1", "\"id\":\"1\"").as_bytes()))
        .await
        .expect("write");
    raw.write_all(&frame(valid.replace("\"id\":1", "\"id\":106").as_bytes()))
        .await
        .expect("write");
    let mut replies = std::collections::HashMap::new();
    for _ in 0..cases.len() + 2 {
        let reply = read_reply(&mut raw).await;
        let id = reply["request_id"].as_u64().expect("a request id");
        assert!(replies.insert(id, reply).is_none(), "two replies for {id}");
    }
    for (id, what, _, kind) in &cases {
        let reply = &replies[id];
        assert_eq!(reply["message"]["Err"]["kind"], *kind, "{what}: {reply}");
        let detail = reply["message"]["Err"]["detail"]
            .as_str()
            .expect("a detail");
        assert!(!detail.is_empty(), "{what}: {reply}");
    }
    assert!(
        replies[&101]["message"]["Err"]["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("unknown method `DropAllTables`")),
        "{}",
        replies[&101]
    );
    assert!(
        replies[&104]["message"]["Err"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("missing field `deadline`")),
        "{}",
        replies[&104]
    );
    assert_eq!(
        replies[&100]["message"]["Ok"]["VerifyPassword"]["Ok"]["email"], "bystander@example.com",
        "the call in flight was answered: {}",
        replies[&100]
    );
    assert_eq!(
        replies[&106]["message"]["Ok"]["Health"]["Ok"]["status"], "ok",
        "{}",
        replies[&106]
    );
    assert_eq!(snapshot(&client).await, before, "the store changed");
    let metrics = client.metrics().await.expect("metrics");
    for line in [
        "latchkey_frames_refused_total{reason=\"unknown_method\"} 1",
        "latchkey_frames_refused_total{reason=\"invalid_request\"} 4",
        "latchkey_frames_refused_total{reason=\"dropped\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_frame_just_under_the_size_cap_is_served_and_one_just_over_is_not() {
    let daemon = Setup::new()
        .toml("[server]\nmax_frame_bytes = 4096")
        .start()
        .await;
    let client = daemon.client().await;
    let body = request_json(7, LatchkeyRequest::Health {});
    // JSON allows white space anywhere between tokens: pad the frame to exactly the cap.
    let padded = format!("{body}{}", " ".repeat(4096 - body.len()));
    assert_eq!(padded.len(), 4096);
    let mut raw = UnixStream::connect(daemon.socket()).await.expect("connect");
    raw.write_all(&frame(padded.as_bytes()))
        .await
        .expect("write");
    let reply = read_reply(&mut raw).await;
    assert_eq!(reply["request_id"], 7, "{reply}");
    assert_eq!(
        reply["message"]["Ok"]["Health"]["Ok"]["status"], "ok",
        "{reply}"
    );
    let over = format!("{padded} ");
    raw.write_all(&frame(over.as_bytes())).await.expect("write");
    assert_closed_by_daemon(&mut raw).await;
    client
        .health()
        .await
        .expect("other clients are still served");
}

#[tokio::test]
async fn huge_and_odd_field_values_get_typed_errors_and_change_nothing() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    let id = client
        .create_user(new_user("owner@example.com", "owner password 1"))
        .await
        .expect("create")
        .id;
    let before = snapshot(&client).await;
    // 20 kB each, so even three in one call stay under the 64 KiB frame cap.
    let huge = "x".repeat(20_000);
    let huge_email = format!("{huge}@example.com");
    let user = |f: &dyn Fn(&mut NewUser)| {
        let mut u = new_user("fresh@example.com", "a good password");
        f(&mut u);
        u
    };
    let field = |r: Result<latchkey_client::User, latchkey_client::Error>| match api_error(r) {
        ApiError::InvalidInput { field, .. } => field,
        other => panic!("expected InvalidInput, got {other:?}"),
    };
    assert_eq!(
        api_error(
            client
                .create_user(user(&|u| u.email = huge_email.clone()))
                .await
        ),
        ApiError::InvalidEmail
    );
    assert_eq!(
        api_error(
            client
                .create_user(user(&|u| u.email = "nul\0@example.com".into()))
                .await
        ),
        ApiError::InvalidEmail
    );
    assert!(matches!(
        api_error(
            client
                .create_user(user(&|u| u.password = huge.clone()))
                .await
        ),
        ApiError::WeakPassword { .. }
    ));
    assert!(matches!(
        api_error(
            client
                .create_user(user(&|u| u.password = "nul\0password".into()))
                .await
        ),
        ApiError::WeakPassword { .. }
    ));
    assert_eq!(
        field(client.create_user(user(&|u| u.name = huge.clone())).await),
        "name"
    );
    assert_eq!(
        field(
            client
                .create_user(user(&|u| u.name = "bell\u{7}".into()))
                .await
        ),
        "name"
    );
    assert_eq!(
        field(
            client
                .create_user(user(&|u| u.role = Some(huge.clone())))
                .await
        ),
        "role"
    );
    assert_eq!(
        field(
            client
                .create_user(user(&|u| u.locale = Some(huge.clone())))
                .await
        ),
        "locale"
    );
    assert_eq!(
        api_error(client.verify_password(&huge_email, &huge, None).await),
        ApiError::InvalidCredentials
    );
    assert_eq!(
        api_error(
            client
                .verify_password("owner@example.com", &huge, None)
                .await
        ),
        ApiError::InvalidCredentials
    );
    assert!(matches!(
        api_error(
            client
                .verify_password("owner@example.com", "x", Some(&huge))
                .await
        ),
        ApiError::InvalidInput { .. }
    ));
    assert_eq!(
        api_error(client.request_password_reset(&huge_email, None, None).await),
        ApiError::InvalidEmail
    );
    assert!(matches!(
        api_error(
            client
                .request_password_reset("owner@example.com", None, Some(&huge))
                .await
        ),
        ApiError::InvalidInput { .. }
    ));
    assert_eq!(
        client
            .check_reset_token(&huge, None)
            .await
            .expect("check")
            .state,
        TokenState::Invalid
    );
    assert_eq!(
        api_error(
            client
                .complete_password_reset(&huge, &huge, Some(&huge), None)
                .await
        ),
        ApiError::InvalidToken
    );
    assert!(matches!(
        api_error(client.change_password(id, "owner password 1", &huge).await),
        ApiError::WeakPassword { .. }
    ));
    assert_eq!(
        api_error(client.get_user(u64::MAX).await),
        ApiError::NotFound
    );
    assert_eq!(
        api_error(client.delete_user(u64::MAX).await),
        ApiError::NotFound
    );
    // The only trace left is the failed login against the real account, which is one.
    let (users, mut events) = snapshot(&client).await;
    assert_eq!(users, before.0, "the users changed");
    let failed = events
        .iter()
        .filter(|e| e.kind == EventKind::LoginFailed)
        .count();
    assert_eq!(failed, 1);
    events.retain(|e| e.kind != EventKind::LoginFailed);
    assert_eq!(events, before.1, "the events changed");
    client
        .verify_password("owner@example.com", "owner password 1", None)
        .await
        .expect("the owner still logs in");
}

#[tokio::test]
async fn a_client_trickling_a_frame_is_cut_off_while_others_are_served() {
    let daemon = Setup::new()
        .toml("[server]\nframe_timeout_secs = 2")
        .start()
        .await;
    let client = daemon.client().await;
    let bytes = frame(request_json(1, LatchkeyRequest::Health {}).as_bytes());
    let mut slow = UnixStream::connect(daemon.socket()).await.expect("connect");
    let started = std::time::Instant::now();
    let mut cut_off = false;
    for byte in &bytes {
        if slow.write_all(&[*byte]).await.is_err() {
            cut_off = true;
            break;
        }
        client.health().await.expect("others are served meanwhile");
        tokio::time::sleep(Duration::from_millis(300)).await;
        if started.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    if !cut_off {
        assert_closed_by_daemon(&mut slow).await;
    }
    assert!(started.elapsed() < Duration::from_secs(8));
    daemon.wait_for_log("frame did not arrive in time").await;
    // Idle time between frames is not limited: a connection quiet for longer than the frame
    // timeout still works.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    client
        .health()
        .await
        .expect("an idle connection stays open");
}

/// A healthy client streaming requests, each write ending one frame and beginning the next,
/// is never cut off: every frame has its own deadline from its first byte. (The deadline once
/// restarted only on a read that began between frames, so such a stream was closed 30 s in.)
/// Streams for 40 s against the default 30 s frame timeout.
#[tokio::test]
async fn a_client_streaming_frames_across_read_boundaries_is_not_cut_off() {
    let daemon = Daemon::start().await;
    let raw = UnixStream::connect(daemon.socket()).await.expect("connect");
    let (mut reader, mut writer) = raw.into_split();
    let streamed = Duration::from_secs(40);
    let replies = tokio::spawn(async move {
        let mut ids = Vec::new();
        loop {
            let mut len = [0u8; 4];
            if reader.read_exact(&mut len).await.is_err() {
                return ids;
            }
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            reader
                .read_exact(&mut body)
                .await
                .expect("a whole reply frame");
            let reply: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(
                reply["message"]["Ok"]["Health"]["Ok"]["status"], "ok",
                "{reply}"
            );
            ids.push(reply["request_id"].as_u64().expect("a request id"));
        }
    });
    let started = std::time::Instant::now();
    let mut id = 1;
    // The first two header bytes of frame 1; then each write is the rest of one frame and the
    // first two header bytes of the next.
    let mut next = frame(request_json(id, LatchkeyRequest::Health {}).as_bytes());
    writer.write_all(&next[..2]).await.expect("write");
    while started.elapsed() < streamed {
        tokio::time::sleep(Duration::from_millis(20)).await;
        id += 1;
        let after = frame(request_json(id, LatchkeyRequest::Health {}).as_bytes());
        let mut write = next[2..].to_vec();
        write.extend_from_slice(&after[..2]);
        writer
            .write_all(&write)
            .await
            .unwrap_or_else(|e| panic!("cut off {:?} in: {e}", started.elapsed()));
        next = after;
    }
    writer
        .write_all(&next[2..])
        .await
        .expect("write the last frame");
    tokio::time::sleep(Duration::from_millis(500)).await;
    writer.shutdown().await.expect("shutdown");
    let ids = tokio::time::timeout(Duration::from_secs(10), replies)
        .await
        .expect("the daemon closes after the last reply")
        .expect("the reader task");
    assert_eq!(ids.len() as u64, id, "every frame answered");
    assert!(!daemon.log().contains("frame did not arrive in time"));
}

#[tokio::test]
async fn an_absurd_deadline_is_refused_without_a_panic() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    let valid = request_json(1, LatchkeyRequest::Health {});
    let secs = valid
        .split("\"secs\":")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .expect("the deadline's seconds");
    for absurd in ["18446744073709551615", "1000000000000", "86401"] {
        let body = valid.replacen(
            &format!("\"secs\":{secs}"),
            &format!("\"secs\":{absurd}"),
            1,
        );
        assert_ne!(body, valid);
        let mut raw = UnixStream::connect(daemon.socket()).await.expect("connect");
        raw.write_all(&frame(body.as_bytes())).await.expect("write");
        let reply = read_reply(&mut raw).await;
        assert_eq!(reply["request_id"], 1, "{reply}");
        assert_eq!(reply["message"]["Err"]["kind"], 11, "{reply}");
        assert!(
            reply["message"]["Err"]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("beyond the 86400 s allowed")),
            "{reply}"
        );
        client.health().await.expect("others are still served");
    }
    // A day is the longest deadline accepted.
    let day = valid.replacen(&format!("\"secs\":{secs}"), "\"secs\":86400", 1);
    let mut raw = UnixStream::connect(daemon.socket()).await.expect("connect");
    raw.write_all(&frame(day.as_bytes())).await.expect("write");
    let reply = read_reply(&mut raw).await;
    assert_eq!(
        reply["message"]["Ok"]["Health"]["Ok"]["status"], "ok",
        "{reply}"
    );
    let log = daemon.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn a_reset_flood_from_many_ips_at_one_address_sends_one_mail() {
    let daemon = Setup::new()
        // Keep mail queued (nothing listens on port 9), so the outbox shows what was sent.
        .toml("[mail]\ntransport = \"smtp\"\n[mail.smtp]\nhost = \"127.0.0.1\"\nport = 9\ntls = \"none\"")
        .start()
        .await;
    let client = daemon.client().await;
    client
        .create_user(new_user("victim@example.com", "victim password 1"))
        .await
        .expect("create");
    let mut accepted = 0;
    let mut limited = 0;
    for i in 0..50u8 {
        let ip = format!("198.51.100.{i}");
        match client
            .request_password_reset("victim@example.com", Some(&ip), None)
            .await
        {
            Ok(()) => accepted += 1,
            Err(e) if matches!(e.api(), Some(ApiError::RateLimited { .. })) => limited += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((accepted, limited), (1, 49));
    let outbox = client.outbox_list(0, 100).await.expect("outbox");
    assert_eq!(
        outbox.iter().filter(|m| m.kind == "password_reset").count(),
        1,
        "{outbox:?}"
    );
}

/// Issue 19, item 8: addresses that look alike were separate accounts, and names could hide
/// or reorder text.
#[tokio::test]
async fn look_alike_addresses_and_names_are_refused_and_one_mailbox_is_one_account() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    let ada = client
        .create_user(new_user("ada@exämple.com", "ada's long password"))
        .await
        .expect("create_user");
    assert_eq!(ada.email, "ada@exämple.com");
    // The same mailbox in its ASCII form, in capitals, decomposed: the same account.
    for form in [
        "ada@xn--exmple-cua.com",
        "ADA@EXÄMPLE.COM",
        "ada@exa\u{0308}mple.com",
    ] {
        assert_eq!(
            api_error(
                client
                    .create_user(new_user(form, "another password 1"))
                    .await
            ),
            ApiError::EmailTaken,
            "{form:?}"
        );
        assert_eq!(
            client.find_user(form).await.expect("find_user").id,
            ada.id,
            "{form:?}"
        );
        client
            .verify_password(form, "ada's long password", None)
            .await
            .expect("one mailbox, one login");
    }
    // Invisible and direction characters make no second account that looks like the first.
    for look_alike in [
        "ada\u{200B}@exämple.com",
        "ada@exä\u{200D}mple.com",
        "\u{202E}ada@exämple.com",
        "ada\u{2028}@exämple.com",
    ] {
        assert_eq!(
            api_error(
                client
                    .create_user(new_user(look_alike, "another password 1"))
                    .await
            ),
            ApiError::InvalidEmail,
            "{look_alike:?}"
        );
    }
    for name in ["Ada\u{202E}ecalevoL", "Ada\u{200B}", "Ada\u{2029}Lovelace"] {
        let mut user = new_user("named@example.com", "another password 1");
        user.name = name.into();
        match api_error(client.create_user(user).await) {
            ApiError::InvalidInput { field, .. } => assert_eq!(field, "name", "{name:?}"),
            other => panic!("{name:?}: {other:?}"),
        }
    }
    let users = client.list_users(0, 10).await.expect("list_users");
    assert_eq!(users.len(), 1, "nothing else was stored: {users:?}");
}

/// Issue 19, item 9: serde's message quoted a mistyped value into tarpc's WARN line, so a
/// client bug that put a password where an id belongs wrote the password to the journal.
/// Since issue 17 the request gets an error reply, which must not quote it either.
#[tokio::test]
async fn a_secret_in_a_mistyped_field_never_reaches_the_log_or_the_reply() {
    let daemon = Daemon::start().await;
    let secret = "Tr0ub4dor&3 my real password";
    let mistyped = request_json(1, LatchkeyRequest::GetUser { id: 1 })
        .replace("\"id\":1}", &format!("\"id\":{secret:?}}}"));
    let mut raw = UnixStream::connect(daemon.socket()).await.expect("connect");
    raw.write_all(&frame(mistyped.as_bytes()))
        .await
        .expect("write");
    let reply = read_reply(&mut raw).await.to_string();
    assert!(
        reply.contains("invalid arguments to `GetUser`: a value of the wrong type"),
        "{reply}"
    );
    assert!(!reply.contains("Tr0ub4dor"), "{reply}");
    daemon
        .wait_for_log("invalid arguments to `GetUser`: a value of the wrong type")
        .await;
    daemon.assert_log_lacks(&[secret, "Tr0ub4dor"]);
}

/// Issue 19, item 2: calls sent with a deadline already past were still run up to their
/// first wait, so they took rate-limit cells for free (`deadline 0` logins filled a limiter
/// in about 30 s). Now they are not run at all.
#[tokio::test]
async fn calls_whose_deadline_has_passed_take_no_limiter_cell() {
    let daemon = Setup::new()
        .toml("[limits]\nlogin_per_ip = { burst = 2, per_secs = 3600 }")
        .start()
        .await;
    let login = LatchkeyRequest::VerifyPassword {
        email: "nobody@example.com".into(),
        password: "a wrong guess".into(),
        client_ip: Some("198.51.100.9".into()),
    };
    let mut expired: serde_json::Value =
        serde_json::from_str(&request_json(1, login)).expect("a request is JSON");
    expired["Request"]["context"]["deadline"] = serde_json::json!({"secs": 0, "nanos": 0});
    let mut raw = UnixStream::connect(daemon.socket()).await.expect("connect");
    for id in 1..=50u64 {
        expired["Request"]["id"] = id.into();
        raw.write_all(&frame(expired.to_string().as_bytes()))
            .await
            .expect("write");
    }
    // The connection still serves (its reply comes after the expired calls were read), and
    // the address still has both of its cells.
    raw.write_all(&frame(
        request_json(51, LatchkeyRequest::Health {}).as_bytes(),
    ))
    .await
    .expect("write");
    let reply = read_reply(&mut raw).await;
    assert_eq!(reply["request_id"], 51, "{reply}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = daemon.client().await;
    for _ in 0..2 {
        assert_eq!(
            api_error(
                client
                    .verify_password("nobody@example.com", "a wrong guess", Some("198.51.100.9"))
                    .await
            ),
            ApiError::InvalidCredentials
        );
    }
    assert!(matches!(
        api_error(
            client
                .verify_password("nobody@example.com", "a wrong guess", Some("198.51.100.9"))
                .await
        ),
        ApiError::RateLimited { .. }
    ));
    drop(raw);
}
