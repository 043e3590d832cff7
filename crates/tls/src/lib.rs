//! Fleetwire's TLS, for the MQTT and HTTPS listeners: server configurations read from PEM
//! files ([`TlsFiles`] → [`server_config`]: TLS 1.2 and 1.3 only, rustls with the ring
//! provider, optional client certificates chained to a client CA), kept current by a
//! [`TlsSource`] that reloads them on `SIGHUP` or when they change, the handshake with a
//! time limit ([`accept`]) and the identity a client certificate proves
//! ([`ClientCertificate`]: subject CN and SHA-256 [`Fingerprint`]). [`pki`] makes a
//! development CA, server and device certificates (`fleetwire cert init`,
//! `fleetwire device cert`).
//!
//! This crate knows nothing of MQTT, HTTP or the registry: whether a certificate's common
//! name is a registered device is for the caller to decide.
//!
//! ```
//! use fleetwire_model::DeviceId;
//! use fleetwire_tls::{parse_certificate_pem, pki, server_config};
//!
//! let dir = std::env::temp_dir().join(format!("fleetwire-tls-doc-{}", std::process::id()));
//! let paths = pki::init(&dir.join("tls"), &pki::InitOptions::default())?;
//! let config = server_config(&paths.tls_files())?;
//! assert!(config.alpn_protocols.is_empty());
//!
//! let device = DeviceId::new("boiler-7").expect("a plain name");
//! let issued = pki::issue_device(&dir.join("tls"), &device, &dir.join("out"), 30)?;
//! let pem = std::fs::read_to_string(&issued.cert).expect("just written");
//! let info = parse_certificate_pem(&pem)?;
//! assert_eq!(info.common_name.as_deref(), Some("boiler-7"));
//! assert_eq!(info.fingerprint, issued.fingerprint);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), fleetwire_tls::Error>(())
//! ```

mod accept;
mod config;
mod error;
mod identity;
pub mod pki;
mod source;

pub use accept::accept;
pub use config::{TlsFiles, server_config, with_alpn};
pub use error::Error;
pub use identity::{
    CertificateInfo, ClientCertificate, Fingerprint, client_certificate, parse_certificate_pem,
};
pub use source::TlsSource;
