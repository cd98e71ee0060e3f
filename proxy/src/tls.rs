//! TLS on both legs, with rustls (ring provider; no OpenSSL).
//!
//! - Towards clients ([`ServerTls`]): `[server.tls]`'s certificate and key, loaded
//!   at start and swapped whole by a reload; a pair that does not load (unreadable,
//!   key not matching the certificate, expired) is refused and the old one serves on.
//! - Towards backends ([`BackendTls`]): a cluster's `tls` mode, as the client option
//!   `--ssl-mode` (MySQL manual, "Command Options for Encrypted Connections"):
//!   `required` encrypts without checking the certificate, `verify_ca` checks the
//!   chain against `tls_ca`, `verify_identity` also the server's address.

use std::path::Path;
use std::sync::{Arc, RwLock};

use baton_control::config::{BackendTls as Mode, ClusterConfig, ServerTlsConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;

/// Why certificates or keys could not be used. Messages name the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("{0}")]
    Config(String),
}

fn file_err(path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.display().to_string(), why: why.to_string() }
}

/// The one crypto provider baton uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Read a PEM file of certificates (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> =
        CertificateDer::pem_file_iter(path).map_err(|e| file_err(path, e))?.collect::<Result<_, _>>().map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

/// Check a certificate's validity period against now (x509 notBefore/notAfter).
fn check_dates(path: &Path, cert: &CertificateDer<'_>) -> Result<(), TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| file_err(path, format!("not an X.509 certificate: {e}")))?;
    let v = parsed.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now > v.not_after {
        return Err(file_err(path, format!("certificate expired on {}", v.not_after)));
    }
    if now < v.not_before {
        return Err(file_err(path, format!("certificate is not valid before {}", v.not_before)));
    }
    Ok(())
}

/// Load and check `[server.tls]`: the chain (leaf first, in date), the key (must
/// match the leaf). TLS 1.2 and 1.3.
pub fn load_server_config(cfg: &ServerTlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = read_certs(&cfg.cert)?;
    check_dates(&cfg.cert, &certs[0])?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| file_err(&cfg.key, format!("no usable private key: {e}")))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| file_err(&cfg.key, format!("does not fit the certificate {}: {e}", cfg.cert.display())))?;
    // No TLS 1.3 session tickets: MySQL clients do not resume sessions, and the
    // tickets would be one more flight after every handshake.
    let mut config = config;
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The client-facing TLS settings now: swapped whole on reload.
#[derive(Default)]
pub struct ServerTls {
    current: RwLock<Option<Arc<ServerTlsState>>>,
}

/// One loaded `[server.tls]`.
pub struct ServerTlsState {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Logins without TLS are refused.
    pub required: bool,
}

impl ServerTls {
    /// Load `cfg` (None: no TLS offered).
    pub fn new(cfg: Option<&ServerTlsConfig>) -> Result<ServerTls, TlsError> {
        let this = ServerTls::default();
        this.reload(cfg)?;
        Ok(this)
    }

    /// Replace the settings; on error the old ones stay.
    pub fn reload(&self, cfg: Option<&ServerTlsConfig>) -> Result<(), TlsError> {
        let state = match cfg {
            None => None,
            Some(c) => Some(Arc::new(ServerTlsState { acceptor: tokio_rustls::TlsAcceptor::from(load_server_config(c)?), required: c.required })),
        };
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = state;
        Ok(())
    }

    /// Take `other`'s settings (loaded and checked already).
    pub fn adopt(&self, other: ServerTls) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = other.current();
    }

    /// The settings now (None: TLS not offered).
    pub fn current(&self) -> Option<Arc<ServerTlsState>> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// TLS towards one cluster's servers.
#[derive(Clone)]
pub struct BackendTls {
    pub mode: Mode,
    connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BackendTls({:?})", self.mode)
    }
}

impl BackendTls {
    /// The cluster's TLS settings (None: `tls = "disabled"`).
    pub fn from_cluster(c: &ClusterConfig) -> Result<Option<BackendTls>, TlsError> {
        let provider = provider();
        let verifier: Arc<dyn ServerCertVerifier> = match c.tls {
            Mode::Disabled => return Ok(None),
            Mode::Required => Arc::new(NoVerification(provider.clone())),
            Mode::VerifyCa | Mode::VerifyIdentity => {
                let path = c.tls_ca.as_deref().ok_or_else(|| TlsError::Config(format!("cluster {:?}: tls_ca is required", c.name)))?;
                let mut roots = RootCertStore::empty();
                for cert in read_certs(path)? {
                    roots.add(cert).map_err(|e| file_err(path, format!("not a usable CA certificate: {e}")))?;
                }
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| file_err(path, e.to_string()))?;
                if c.tls == Mode::VerifyCa {
                    Arc::new(AnyName(webpki))
                } else {
                    webpki
                }
            }
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Some(BackendTls { mode: c.tls, connector: tokio_rustls::TlsConnector::from(Arc::new(config)) }))
    }

    /// Run the TLS handshake with the server at `addr` (`ip:port`) over `tcp`.
    pub async fn connect(&self, addr: &str, tcp: TcpStream) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr).trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string()).map_err(|e| std::io::Error::other(format!("{host:?} is not a server name: {e}")))?;
        self.connector.connect(name, tcp).await
    }
}

/// `verify_ca`: the chain must verify; the name may be anything.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `required`: encrypted, the certificate not checked (the handshake's
/// signatures still are).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
