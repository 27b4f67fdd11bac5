//! Helpers for calls through the client crate, with readable expected/got failures.

use std::fmt;
use std::time::Duration;

use latchkey_client::{ApiError, Error, NewUser};
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

/// A `NewUser` with a name derived from the email and the default role and locale.
pub fn new_user(email: &str, password: &str) -> NewUser {
    NewUser {
        email: email.into(),
        name: email.split('@').next().unwrap_or_default().into(),
        password: password.into(),
        role: None,
        locale: None,
    }
}

/// The daemon's typed error from `result`; fails, showing what came instead, if it is not one.
#[track_caller]
pub fn api_error<T: fmt::Debug>(result: Result<T, Error>) -> ApiError {
    match result {
        Err(Error::Api(e)) => e,
        other => panic!("expected an error from the daemon\n     got: {other:?}"),
    }
}

/// Fails unless `result` is exactly the daemon error `expected`.
#[track_caller]
pub fn assert_api_error<T: fmt::Debug>(result: Result<T, Error>, expected: ApiError) {
    let shown = format!("{result:?}");
    match result {
        Err(Error::Api(got)) if got == expected => {}
        _ => panic!("expected: Err(Api({expected:?}))\n     got: {shown}"),
    }
}

/// Waits until the daemon closes `stream`: reading must give end-of-file (or a reset, which
/// Linux reports instead when the daemon closed with bytes of ours still unread) within 10 s,
/// and never data.
pub async fn assert_closed_by_daemon(stream: &mut UnixStream) {
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await;
    match read {
        Ok(Ok(0)) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(Ok(n)) => panic!(
            "expected the daemon to close the connection\n     got: {n} bytes: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Ok(Err(e)) => panic!("expected the daemon to close the connection\n     got: {e}"),
        Err(_) => {
            panic!("expected the daemon to close the connection\n     got: still open after 10 s")
        }
    }
}
