//! The connection to `latchkeyd`.
//!
//! One connection serves every request: the client multiplexes calls over it. When the daemon
//! restarts the connection dies; the call that notices fails (the visitor sees "try again")
//! and the next call connects anew. Failed calls are not retried, because some are not
//! idempotent: a `complete_password_reset` that did run before the connection broke would,
//! run again, report its own token as used.

use std::future::Future;
use std::path::PathBuf;

use latchkey_client::{Client, Error};
use tokio::sync::Mutex;

/// A lazily made, shared connection to the daemon.
pub struct Daemon {
    /// The daemon's socket.
    socket: PathBuf,
    /// The current connection, if one was made and has not failed since. A tokio mutex
    /// because it is held while connecting, so that concurrent requests wait for one
    /// connection instead of each making their own.
    client: Mutex<Option<Client>>,
}

impl Daemon {
    /// A handle for the daemon at `socket`; nothing is connected until the first call.
    pub fn new(socket: PathBuf) -> Daemon {
        Daemon {
            socket,
            client: Mutex::new(None),
        }
    }

    /// Runs `call` with the connection, connecting first if there is none. If the call finds
    /// the connection broken, it is dropped so the next call makes a new one; a call that only
    /// timed out or was refused leaves it in place.
    ///
    /// ```no_run
    /// # async fn demo(daemon: &latchkey_webapp::daemon::Daemon) -> Result<(), latchkey_client::Error> {
    /// let health = daemon.call(|client| async move { client.health().await }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, Error>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let client = {
            let mut slot = self.client.lock().await;
            match &*slot {
                Some(client) => client.clone(),
                None => {
                    let client = Client::connect(&self.socket).await?;
                    *slot = Some(client.clone());
                    client
                }
            }
        };
        let result = call(client).await;
        if let Err(e @ Error::Disconnected) = &result {
            tracing::warn!(error = %e, "the connection to latchkeyd broke; reconnecting");
            *self.client.lock().await = None;
        }
        result
    }
}
