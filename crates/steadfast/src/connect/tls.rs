//! TLS with rustls (ring provider).
//!
//! # Behaviour
//! - The client configuration is built once, when the client starts: a CA file or client
//!   certificate that cannot be read is a config error naming the file, not a failed connection.
//! - Every connection verifies the certificate against `tls.server_name` (default: the endpoint's
//!   host name), whatever address the name resolved to; a MOVING target named by host name is
//!   verified against that name.
//! - [`TlsVerification::InsecureAcceptAnyCertificate`] still checks that the handshake's
//!   signatures are valid, but trusts any certificate.

use std::io;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::{Config, TlsRoots, TlsVerification};
use crate::error::Error;

/// What every TLS connection of a client shares.
#[derive(Clone)]
pub(crate) struct Tls {
    connector: TlsConnector,
    server_name: Option<String>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl Tls {
    /// The TLS setup for `config`, or `None` when TLS is off.
    ///
    /// # Errors
    /// A CA or identity file that cannot be read or holds nothing usable.
    pub(crate) fn from_config(config: &Config) -> Result<Option<Self>, Error> {
        let tls = &config.tls;
        if !tls.is_enabled {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::invalid_config("tls", "protocol versions", &e.to_string()))?;
        let builder = match tls.verification {
            TlsVerification::Full => builder.with_root_certificates(roots(&tls.roots)?),
            TlsVerification::InsecureAcceptAnyCertificate => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider))),
        };
        let client_config = match &tls.client_identity {
            None => builder.with_no_client_auth(),
            Some(identity) => {
                let chain = certificates(
                    &identity.certificate_file,
                    "tls.client_identity.certificate_file",
                )?;
                let key = PrivateKeyDer::from_pem_file(&identity.key_file).map_err(|e| {
                    Error::invalid_config(
                        "tls.client_identity.key_file",
                        &identity.key_file.display().to_string(),
                        &e.to_string(),
                    )
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    Error::invalid_config(
                        "tls.client_identity",
                        &identity.certificate_file.display().to_string(),
                        &e.to_string(),
                    )
                })?
            }
        };
        Ok(Some(Self {
            connector: TlsConnector::from(Arc::new(client_config)),
            server_name: tls.server_name.clone(),
        }))
    }

    /// Runs the TLS handshake on `stream`, verifying `host` (or the configured server name).
    pub(crate) async fn wrap(
        &self,
        stream: TcpStream,
        host: &str,
    ) -> io::Result<TlsStream<TcpStream>> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let server_name = ServerName::try_from(name.to_owned()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("server name {name:?}: {e}"),
            )
        })?;
        self.connector.connect(server_name, stream).await
    }
}

/// Whether a TLS handshake failed on a certificate (ours or theirs), which retrying cannot fix.
pub(crate) fn is_certificate_problem(error: &io::Error) -> bool {
    use rustls::AlertDescription as Alert;
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented) => true,
        Some(rustls::Error::AlertReceived(alert)) => matches!(
            alert,
            Alert::BadCertificate
                | Alert::UnsupportedCertificate
                | Alert::CertificateRevoked
                | Alert::CertificateExpired
                | Alert::CertificateUnknown
                | Alert::UnknownCA
                | Alert::CertificateRequired
                | Alert::AccessDenied
        ),
        _ => false,
    }
}

/// Whether the peer answered the TLS handshake with bytes that are not TLS (a plain Redis
/// port, an HTTP server): retrying cannot fix it.
pub(crate) fn is_not_tls(error: &io::Error) -> bool {
    matches!(
        error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidMessage(_))
    )
}

fn roots(choice: &TlsRoots) -> Result<RootCertStore, Error> {
    let mut store = RootCertStore::empty();
    match choice {
        TlsRoots::WebPki => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        TlsRoots::Platform => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(Error::invalid_config(
                    "tls.roots",
                    "Platform",
                    "the operating system's store holds no usable certificate",
                ));
            }
        }
        TlsRoots::CaFile(path) => {
            let (added, _ignored) =
                store.add_parsable_certificates(certificates(path, "tls.roots")?);
            if added == 0 {
                return Err(Error::invalid_config(
                    "tls.roots",
                    &path.display().to_string(),
                    "no usable CA certificate in the file",
                ));
            }
        }
    }
    Ok(store)
}

fn certificates(
    path: &std::path::Path,
    field: &str,
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let shown = path.display().to_string();
    let found: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::invalid_config(field, &shown, &e.to_string()))?
        .collect();
    let found = found.map_err(|e| Error::invalid_config(field, &shown, &e.to_string()))?;
    if found.is_empty() {
        return Err(Error::invalid_config(
            field,
            &shown,
            "no PEM certificate in the file",
        ));
    }
    Ok(found)
}

/// Trusts any certificate, still checking handshake signatures.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn tls_off_needs_nothing() {
        assert!(Tls::from_config(&Config::default()).unwrap().is_none());
    }

    #[test]
    fn an_unreadable_ca_file_is_a_config_error_naming_the_file() {
        let mut config = Config::default();
        config.tls.is_enabled = true;
        config.tls.roots = TlsRoots::CaFile("/nonexistent/ca.pem".into());
        let err = Tls::from_config(&config).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn bundled_roots_build_a_client() {
        let mut config = Config::default();
        config.tls.is_enabled = true;
        assert!(Tls::from_config(&config).unwrap().is_some());
    }
}
