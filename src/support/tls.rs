//! TLS material: PEM files into rustls configurations for the listeners
//! (with a certificate re-read when its files change, and optional client
//! certificate verification) and for the HTTP store client; and the
//! identities a client certificate names.
//!
//! Knows files and rustls, nothing of HTTP or decisions.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

/// TLS material that cannot be used.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("`{path}`: {message}")]
    Pem {
        /// the file
        path: PathBuf,
        /// what is wrong
        message: String,
    },
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |message: String| TlsError::Pem {
        path: path.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem("no certificate in the file".to_owned()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn certified_key(cert: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    CertifiedKey::from_der(certs(cert)?, key(key_path)?, &provider())
        .map_err(|e| TlsError::Config(e.to_string()))
}

fn stamp(paths: &[&Path]) -> Vec<Option<(SystemTime, u64)>> {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// The listener's certificate, swapped when its files change: new
/// handshakes get the new one, open connections keep theirs.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    stamp: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl ReloadingCert {
    /// Reads the pair once.
    ///
    /// # Errors
    /// Unreadable files, or a key that does not match the certificate.
    pub fn open(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let stamp = stamp(&[cert, key]);
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: ArcSwap::from_pointee(certified_key(cert, key)?),
            stamp: Mutex::new(stamp),
        })
    }

    /// Re-reads the pair when either file changed; a bad pair is logged and
    /// the current certificate kept.
    pub fn reload_if_changed(&self) {
        let now = stamp(&[&self.cert, &self.key]);
        let mut last = self
            .stamp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *last == now {
            return;
        }
        match certified_key(&self.cert, &self.key) {
            Ok(fresh) => {
                self.current.store(Arc::new(fresh));
                *last = now;
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
            }
            // A half-written pair is common mid-rotation: try again next tick.
            Err(error) => {
                tracing::warn!(%error, "TLS certificate not reloaded; keeping the current one")
            }
        }
    }

    /// Polls the files every `interval` while the certificate is in use.
    pub fn watch(self: &Arc<Self>, interval: Duration) {
        crate::support::periodic::every(self, interval, Self::reload_if_changed);
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The listeners' rustls configuration: TLS 1.2 and 1.3, ALPN `h2` and
/// `http/1.1`, and client certificates required when `client_ca` is given.
///
/// # Errors
/// Unreadable or unusable PEM files.
pub fn server_config(
    cert: &Arc<ReloadingCert>,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::clone(cert) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The HTTP store client's rustls configuration: `ca` instead of the
/// system roots when given, and a client certificate when given.
///
/// # Errors
/// Unreadable or unusable PEM files.
pub fn client_config(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let roots = match ca {
        Some(ca) => roots(ca)?,
        None => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            roots
        }
    };
    let builder = builder.with_root_certificates(roots);
    match identity {
        Some((cert, key_path)) => builder
            .with_client_auth_cert(certs(cert)?, key(key_path)?)
            .map_err(|e| TlsError::Config(e.to_string())),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The identities a client certificate names: its DNS and URI subject
/// alternative names, or its common name when it has none.
pub fn identities(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => names.push((*dns).to_owned()),
                x509_parser::extensions::GeneralName::URI(uri) => names.push((*uri).to_owned()),
                _ => {}
            }
        }
    }
    // When the certificate has subject alternative names, they alone name
    // it (RFC 6125): a CN that says otherwise is not another identity.
    if names.is_empty() {
        names.extend(
            parsed
                .subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok().map(str::to_owned)),
        );
    }
    names
}
