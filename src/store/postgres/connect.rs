//! From `[store.postgres]` to a connection pool: the server's address, the password from its
//! source, TLS, and the session settings every connection starts with.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::super::{PostgresConfig, PostgresTls, StoreError};

/// The pool for `config`. Nothing connects yet: the first `get` does.
pub(super) fn pool(config: &PostgresConfig) -> Result<Pool, StoreError> {
    let bad = |reason: String| StoreError::Schema(reason);
    let mut pg = match &config.url {
        Some(url) => url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| bad(format!("store.postgres.url: {e}")))?,
        None => {
            let mut pg = tokio_postgres::Config::new();
            match (&config.socket_dir, &config.host) {
                (Some(dir), _) => pg.host_path(dir),
                (None, Some(host)) => pg.host(host),
                (None, None) => pg.host("localhost"),
            };
            pg.port(config.port)
                .dbname(&config.database)
                .user(&config.user);
            pg
        }
    };
    if let Some(password) = crate::setting::read_secret(&config.password())
        .map_err(|e| StoreError::Key(e.to_string()))?
    {
        pg.password(password);
    }
    let timeout = Duration::from_secs(config.connect_timeout_secs);
    pg.application_name("latchkeyd")
        .connect_timeout(timeout)
        // Every acknowledged write is durable whatever the server's default, and no statement
        // or forgotten transaction holds locks for long.
        .options(format!(
            "-c synchronous_commit=on -c statement_timeout={} \
             -c idle_in_transaction_session_timeout={} -c lock_timeout={}",
            config.statement_timeout_ms,
            config.statement_timeout_ms.saturating_mul(2),
            config.statement_timeout_ms,
        ));
    let over_socket = pg
        .get_hosts()
        .iter()
        .all(|h| matches!(h, tokio_postgres::config::Host::Unix(_)));
    // PostgreSQL does not speak TLS on its Unix socket; the socket never leaves the machine.
    pg.ssl_mode(match config.tls {
        _ if over_socket => SslMode::Disable,
        PostgresTls::Disable => SslMode::Disable,
        PostgresTls::Require | PostgresTls::VerifyFull => SslMode::Require,
    });
    let tls = MakeRustlsConnect::new(tls_config(config)?);
    let manager = Manager::from_config(
        pg,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .map_err(|e| bad(format!("cannot build the connection pool: {e}")))
}

/// The rustls settings for `config.tls`: the Mozilla roots or `ca_file` for `verify-full`
/// (the chain and the host name checked), any certificate for `require`.
fn tls_config(config: &PostgresConfig) -> Result<rustls::ClientConfig, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Key(format!("TLS: {e}")))?;
    let tls = if config.tls == PostgresTls::Require {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider }))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match &config.ca_file {
            Some(path) => {
                let read = |e: String| {
                    StoreError::Key(format!("store.postgres.ca_file: {}: {e}", path.display()))
                };
                use rustls::pki_types::pem::PemObject;
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .map_err(|e| read(e.to_string()))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| read(e.to_string()))?;
                if certs.is_empty() {
                    return Err(read("holds no certificate".into()));
                }
                for cert in certs {
                    roots.add(cert).map_err(|e| read(e.to_string()))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(tls)
}

/// `tls = "require"`: encrypted, with signatures checked, but any certificate accepted, as
/// libpq's `sslmode=require` does. Documented as weaker than `verify-full`.
#[derive(Debug)]
struct AnyCertificate {
    /// Checks the handshake signatures.
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
