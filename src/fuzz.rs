//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, nightly): each takes arbitrary
//! bytes, runs one part of the daemon that reads caller input, and panics only when an
//! invariant the rest of the daemon relies on breaks. Not part of the API: hidden, and only
//! the fuzz crate calls it.

// A fuzz harness reports a broken invariant by panicking, and its one-time set-up has no
// caller to return an error to: both are the point here, not a failure to handle.
#![allow(clippy::panic, clippy::expect_used)]

use std::sync::{Arc, OnceLock};

use latchkey_client::{Latchkey, LatchkeyRequest};
use tarpc::server::Serve;

use crate::mail::template::{Template, Vars};
use crate::mail::MailKind;
use crate::server::codec::{decode, Decoded};
use crate::server::FrameTracker;
use crate::tokens::RawToken;
use crate::validate;

/// A request frame's body, through the socket's decoder: envelope, context, message. Never
/// panics; a refusal or a drop names no bytes of the frame (a missing field of ours aside);
/// and the length-prefixed stream `data` makes is split into frames the same way however it
/// arrives.
pub fn frame(data: &[u8]) {
    let why = match decode::<LatchkeyRequest>(data, latchkey_client::METHODS) {
        Decoded::Message(_) => None,
        Decoded::Refuse { error, .. } => Some(error.detail),
        Decoded::Drop(why) => Some(why),
        Decoded::Close(e) => Some(e.to_string()),
    };
    if let Some(why) = why {
        assert!(
            why.starts_with("invalid ")
                || why.starts_with("unknown method")
                || why.starts_with("a message without")
                || why.starts_with("a cancellation that")
                || why.starts_with("a frame that does not decode: "),
            "{why}"
        );
    }
    let mut whole = FrameTracker::default();
    whole.advance(data);
    let mut bytewise = FrameTracker::default();
    for byte in data {
        bytewise.advance(std::slice::from_ref(byte));
    }
    assert_eq!(whole.in_frame(), bytewise.in_frame());
}

/// Reset token text: parsing never panics, and a token that parses encodes back to text
/// that parses to the same token.
pub fn token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(token) = RawToken::parse(text) {
        let again = RawToken::parse(&token.encode()).expect("an encoded token parses");
        assert_eq!(again.encode(), token.encode());
        assert_eq!(again.verifier_hash(), token.verifier_hash());
    }
}

/// Emails, names, roles, locales and client IPs: never a panic; a normalised email is its
/// own normal form, fits the limit and holds no invisible character; a name passes only
/// without one.
pub fn fields(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(email) = validate::email(&text) {
        assert_eq!(validate::email(&email).as_ref(), Ok(&email), "{text:?}");
        assert!(email.len() <= validate::MAX_EMAIL_BYTES);
        assert!(!email.chars().any(validate::invisible), "{email:?}");
    }
    if let Ok(name) = validate::name(&text) {
        assert!(!name.chars().any(validate::invisible), "{name:?}");
        assert!(name.len() <= validate::MAX_NAME_BYTES);
    }
    let _ = validate::role(Some(&text));
    let _ = validate::locale(Some(&text));
    let _ = validate::client_ip(Some(&text));
}

/// Mail templates: the first line is a template, the rest a value. Parsing and rendering
/// never panic, and in HTML the value never brings markup of its own.
pub fn template(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (source, value) = text
        .split_once('\n')
        .unwrap_or((&text, "<b>\"x\" & 'y'</b>"));
    for kind in MailKind::ALL {
        let Ok(template) = Template::parse(source, kind) else {
            continue;
        };
        let mut vars = Vars::default();
        for name in ["product", "email", "client_ip", "at", "link", "expires_at"] {
            vars.set(name, value);
        }
        let html = template.render(&vars, true);
        let plain = template.render(&vars, false);
        // Escaping only ever lengthens a value, so HTML is never shorter than text.
        assert!(html.len() >= plain.len());
        if value.contains('<') && !source.contains('<') {
            assert!(!html.contains('<'), "markup from a value: {html:?}");
        }
    }
}

/// The request handlers: `data` as a JSON request, run through the service as an admin on
/// a real store in a temporary directory (shared by every input of the run). Never panics,
/// whatever the request does.
pub fn request(data: &[u8]) {
    let Ok(request) = serde_json::from_slice::<LatchkeyRequest>(data) else {
        return;
    };
    let (runtime, service) = service();
    runtime.block_on(async {
        let mut ctx = tarpc::context::current();
        ctx.deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let reply = service.clone().serve().serve(ctx, request).await;
        serde_json::to_vec(&reply).expect("every reply serialises");
    });
}

/// The one runtime and service of a fuzz run.
fn service() -> &'static (tokio::runtime::Runtime, crate::service::Service) {
    static SERVICE: OnceLock<(tokio::runtime::Runtime, crate::service::Service)> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let dir = std::env::temp_dir().join(format!("latchkey-fuzz-{}", std::process::id()));
        let service = runtime.block_on(async {
            let store = crate::store::Store::open(&crate::store::StoreConfig {
                data_dir: dir,
                ..Default::default()
            })
            .await
            .expect("a store in a temporary directory");
            // The smallest argon2 parameters, so an input costs microseconds, not a hash.
            let policy = crate::passwords::PasswordConfig {
                memory_kib: 8,
                iterations: 1,
                ..Default::default()
            };
            let metrics = crate::metrics::Metrics::new();
            let passwords =
                crate::passwords::Passwords::new(&policy, 1, metrics.hash_wait_histogram())
                    .expect("argon2 takes the smallest parameters");
            let limits = Arc::new(arc_swap::ArcSwap::from_pointee(crate::limits::Limits::new(
                &Default::default(),
            )));
            let state = Arc::new(crate::service::State {
                store,
                passwords,
                reset: arc_swap::ArcSwap::from_pointee(Default::default()),
                // The concealing mode, the sign-up path with more to it.
                signup: arc_swap::ArcSwap::from_pointee(crate::service::SignUpConfig {
                    conceal_taken_addresses: true,
                    ..Default::default()
                }),
                limits,
                mail_wake: Arc::new(tokio::sync::Notify::new()),
                metrics,
                max_frame_bytes: 64 * 1024,
                started: std::time::Instant::now(),
                store_probe: Arc::default(),
                backups: Default::default(),
            });
            crate::service::Service {
                state,
                peer: crate::service::Peer {
                    uid: 0,
                    pid: Some(1),
                    role: latchkey_client::CallerRole::Admin,
                },
            }
        });
        (runtime, service)
    })
}
