//! The crate's one error type: every failure names the file, the peer or the text it is
//! about and keeps its cause as `source`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What went wrong loading TLS files, handshaking, reading a certificate or running the
/// development PKI.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read (missing, unreadable).
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written (or its directory created).
    #[error("cannot write {}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file or text is not well-formed PEM (a section without its end line, bad base64).
    #[error("{what} is not valid PEM")]
    Pem {
        /// The file (its path) or `the text`.
        what: String,
        /// The PEM parser's complaint.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A certificate file holds no `CERTIFICATE` section.
    #[error("no certificate in {}: expected PEM `-----BEGIN CERTIFICATE-----` sections", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A key file holds no private key.
    #[error(
        "no private key in {}: expected a PEM `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` (PKCS#1) \
         or `EC PRIVATE KEY` (SEC1) section",
        path.display()
    )]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key cannot be used (an unsupported algorithm, a damaged key).
    #[error("cannot use the private key in {}", path.display())]
    InvalidKey {
        /// The key file.
        path: PathBuf,
        /// rustls's complaint.
        #[source]
        source: rustls::Error,
    },
    /// The private key is not the one of the certificate.
    #[error(
        "the private key in {} does not belong to the certificate in {}",
        key_file.display(),
        cert_file.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert_file: PathBuf,
        /// The key file.
        key_file: PathBuf,
    },
    /// The certificate chain cannot be used with the key (a damaged certificate).
    #[error("cannot use the certificate in {} with the key in {}", cert_file.display(), key_file.display())]
    InvalidCertificateChain {
        /// The certificate file.
        cert_file: PathBuf,
        /// The key file.
        key_file: PathBuf,
        /// rustls's complaint.
        #[source]
        source: rustls::Error,
    },
    /// The client CA bundle holds no certificate.
    #[error(
        "no CA certificate in {}: expected PEM `-----BEGIN CERTIFICATE-----` sections",
        path.display()
    )]
    EmptyCaBundle {
        /// The bundle.
        path: PathBuf,
    },
    /// A certificate of the client CA bundle cannot be a trust anchor.
    #[error("cannot trust a certificate of {} as a client CA", path.display())]
    InvalidCa {
        /// The bundle.
        path: PathBuf,
        /// rustls's complaint.
        #[source]
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built from the CA bundle.
    #[error("cannot verify client certificates with {}", path.display())]
    ClientVerifier {
        /// The bundle.
        path: PathBuf,
        /// rustls's complaint.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// rustls refused the protocol versions or cipher suites (a build problem, not a
    /// configuration one).
    #[error("cannot configure TLS 1.2 and 1.3 with the ring provider")]
    Protocol {
        /// rustls's complaint.
        #[source]
        source: rustls::Error,
    },
    /// A client did not finish its TLS handshake in time.
    #[error("TLS handshake with {} did not finish within {timeout:?}", peer_name(*.peer))]
    HandshakeTimeout {
        /// The client's address, if known.
        peer: Option<SocketAddr>,
        /// The time it had.
        timeout: Duration,
    },
    /// A client's TLS handshake failed (not TLS, an untrusted or expired certificate, no
    /// common protocol version).
    #[error("TLS handshake with {} failed", peer_name(*.peer))]
    Handshake {
        /// The client's address, if known.
        peer: Option<SocketAddr>,
        /// The failure, as tokio-rustls reports it (a `rustls::Error` inside).
        #[source]
        source: std::io::Error,
    },
    /// Bytes that should be an X.509 certificate are not.
    #[error("{what} is not a valid X.509 certificate")]
    InvalidCertificate {
        /// Which certificate (a file, `the client certificate`, `the text`).
        what: String,
        /// x509-parser's complaint.
        #[source]
        source: x509_parser::error::X509Error,
    },
    /// A client certificate's subject has no common name (CN), or several, or one that is
    /// not text: it names no device.
    #[error(
        "the client certificate's subject {subject:?} must have exactly one text common name (CN), the device id"
    )]
    CommonName {
        /// The subject, as text.
        subject: String,
    },
    /// The text given as a certificate has no PEM section at all.
    #[error("not PEM: expected a `-----BEGIN CERTIFICATE-----` section")]
    NotPem,
    /// The PEM text has sections, none of them a certificate.
    #[error("no certificate in the text: expected a `-----BEGIN CERTIFICATE-----` section")]
    NoCertificateInText,
    /// The PEM text has more than one certificate where one was expected.
    #[error("expected exactly one certificate, got {count}")]
    SeveralCertificates {
        /// How many there are.
        count: usize,
    },
    /// A fingerprint is not 64 hexadecimal digits.
    #[error(
        "fingerprint {text:?}: expected 64 hexadecimal digits (SHA-256), optionally in pairs \
         separated by ':'"
    )]
    InvalidFingerprint {
        /// The text.
        text: String,
    },
    /// `pki::init` would replace an existing CA.
    #[error(
        "a CA already exists in {}: pass --force to replace it (certificates it issued will no \
         longer be trusted)",
        path.display()
    )]
    CaExists {
        /// The existing CA certificate or key.
        path: PathBuf,
    },
    /// The CA certificate or key of `pki::issue_device` cannot be used.
    #[error("cannot use the CA in {} (run `fleetwire cert init` to create one)", path.display())]
    InvalidCaFiles {
        /// The CA certificate or key.
        path: PathBuf,
        /// rcgen's complaint.
        #[source]
        source: rcgen::Error,
    },
    /// A subject alternative name is not a DNS name or an IP address.
    #[error(
        "subject alternative name {name:?}: expected an IP address or a DNS name (letters, \
         digits, '-', '.', '*')"
    )]
    InvalidSan {
        /// The name.
        name: String,
    },
    /// A device certificate's validity is out of range.
    #[error("certificate validity of {days} days: expected 1 to {max} days")]
    InvalidDays {
        /// The days asked for.
        days: u32,
        /// The most allowed.
        max: u32,
    },
    /// A key or certificate could not be generated.
    #[error("cannot generate the {what}")]
    Generate {
        /// What (`CA certificate`, `device key`).
        what: &'static str,
        /// rcgen's complaint.
        #[source]
        source: rcgen::Error,
    },
}

fn peer_name(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "a client".to_owned(), |addr| addr.to_string())
}
