//! Server configurations from PEM files: [`TlsFiles`] → [`server_config`], with ALPN set
//! by [`with_alpn`]. Everything here is synchronous and reads the files once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::Error;

/// The PEM files a TLS listener serves: the server's chain and key, and optionally the
/// CAs whose client certificates it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain: its own certificate first, then any
    /// intermediates.
    pub cert_file: PathBuf,
    /// The server's private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key_file: PathBuf,
    /// CA certificates (a PEM bundle) for client certificates. With it, a client may
    /// present a certificate, which must chain to one of these and be valid now; a client
    /// may also present none (and log in with a password). Without it, no client
    /// certificate is asked for.
    pub client_ca_file: Option<PathBuf>,
}

impl TlsFiles {
    /// The files, in the order a reload reads them.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        [
            Some(self.cert_file.as_path()),
            Some(self.key_file.as_path()),
        ]
        .into_iter()
        .chain(std::iter::once(self.client_ca_file.as_deref()))
        .flatten()
    }
}

/// The ring provider, the only one this crate uses (no aws-lc-rs, no OpenSSL).
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads `files` into a server configuration: TLS 1.3 and 1.2 only, the ring provider,
/// the chain and key (checked to belong together), and, with a client CA, optional
/// client certificates verified against it. No ALPN protocols: see [`with_alpn`].
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, Error> {
    let chain = read_certificates(&files.cert_file)?;
    if chain.is_empty() {
        return Err(Error::NoCertificate {
            path: files.cert_file.clone(),
        });
    }
    let key = read_private_key(&files.key_file)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| Error::Protocol { source })?;
    let builder = match &files.client_ca_file {
        Some(path) => {
            let roots = read_client_roots(path)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|source| Error::ClientVerifier {
                    path: path.clone(),
                    source,
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|source| match source {
            rustls::Error::InconsistentKeys(_) => Error::KeyMismatch {
                cert_file: files.cert_file.clone(),
                key_file: files.key_file.clone(),
            },
            rustls::Error::General(_) => Error::InvalidKey {
                path: files.key_file.clone(),
                source,
            },
            source => Error::InvalidCertificateChain {
                cert_file: files.cert_file.clone(),
                key_file: files.key_file.clone(),
                source,
            },
        })?;
    Ok(Arc::new(config))
}

/// A copy of `config` that offers `protocols` in ALPN, most preferred first (`mqtt` for
/// an MQTT listener, `http/1.1` for HTTPS). A client that offers ALPN protocols, none of
/// them among these, fails the handshake; a client that offers none is served.
pub fn with_alpn(config: &ServerConfig, protocols: &[&[u8]]) -> Arc<ServerConfig> {
    let mut config = config.clone();
    config.alpn_protocols = protocols.iter().map(|protocol| protocol.to_vec()).collect();
    Arc::new(config)
}

/// The certificates of a PEM file, in order (none if it has no `CERTIFICATE` section).
pub(crate) fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = read(path)?;
    CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| Error::Pem {
            what: path.display().to_string(),
            source,
        })
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => Error::NoPrivateKey {
            path: path.to_owned(),
        },
        source => Error::Pem {
            what: path.display().to_string(),
            source,
        },
    })
}

fn read_client_roots(path: &Path) -> Result<rustls::RootCertStore, Error> {
    let certificates = read_certificates(path)?;
    if certificates.is_empty() {
        return Err(Error::EmptyCaBundle {
            path: path.to_owned(),
        });
    }
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates {
        roots.add(certificate).map_err(|source| Error::InvalidCa {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}
