//! A development PKI: a CA, a server certificate and device (client) certificates, as
//! PEM files, for trying TLS and client-certificate logins without a real PKI. ECDSA
//! P-256 keys throughout (small certificates, fast handshakes); keys are written with mode
//! 0600, each file through a temporary file and a rename, so a watching server never reads
//! one half-written.
//!
//! Validity: the CA 10 years, the server certificate 1 year, a device certificate as many
//! days as asked; each starts an hour in the past, to tolerate clocks slightly behind.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use fleetwire_model::DeviceId;
use fleetwire_time::Timestamp;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use time::OffsetDateTime;

use crate::config::TlsFiles;
use crate::error::Error;
use crate::identity::Fingerprint;

/// The CA certificate's file name in the PKI directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA key's file name in the PKI directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// The server certificate's file name in the PKI directory.
pub const SERVER_CERT_FILE: &str = "server.pem";
/// The server key's file name in the PKI directory.
pub const SERVER_KEY_FILE: &str = "server.key";

/// Days the CA is valid.
pub const CA_DAYS: u32 = 3650;
/// Days the server certificate is valid.
pub const SERVER_DAYS: u32 = 365;
/// The longest device certificate validity [`issue_device`] accepts, in days.
pub const MAX_DEVICE_DAYS: u32 = 36_500;

/// What [`init`] creates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitOptions {
    /// Extra names of the server: IP addresses become IP subject alternative names, the
    /// others DNS names. `localhost`, `127.0.0.1`, `::1` and the host name are always
    /// included.
    pub sans: Vec<String>,
    /// Replace an existing CA (every certificate it issued stops being trusted).
    pub force: bool,
}

/// The files [`init`] wrote, and the names the server certificate is valid for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiPaths {
    /// The CA certificate (give it to clients, `--cafile`).
    pub ca_cert: PathBuf,
    /// The CA key (mode 0600; keep it on this machine).
    pub ca_key: PathBuf,
    /// The server certificate.
    pub server_cert: PathBuf,
    /// The server key (mode 0600).
    pub server_key: PathBuf,
    /// The server certificate's subject alternative names, in order.
    pub server_names: Vec<String>,
}

impl PkiPaths {
    /// The files a server serves: this certificate and key, and this CA for client
    /// certificates.
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            cert_file: self.server_cert.clone(),
            key_file: self.server_key.clone(),
            client_ca_file: Some(self.ca_cert.clone()),
        }
    }
}

/// The files [`issue_device`] wrote and what the certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePaths {
    /// The device certificate, `<out>/<id>.pem`.
    pub cert: PathBuf,
    /// The device key, `<out>/<id>.key` (mode 0600).
    pub key: PathBuf,
    /// The certificate's fingerprint.
    pub fingerprint: Fingerprint,
    /// When the certificate expires (to the second).
    pub not_after: Timestamp,
}

/// Creates a CA and a server certificate signed by it in `dir` (created if need be, mode
/// 0700): [`CA_CERT_FILE`], [`CA_KEY_FILE`], [`SERVER_CERT_FILE`], [`SERVER_KEY_FILE`].
/// Refuses to replace an existing CA ([`Error::CaExists`]) unless `options.force`.
pub fn init(dir: &Path, options: &InitOptions) -> Result<PkiPaths, Error> {
    let paths = PkiPaths {
        ca_cert: dir.join(CA_CERT_FILE),
        ca_key: dir.join(CA_KEY_FILE),
        server_cert: dir.join(SERVER_CERT_FILE),
        server_key: dir.join(SERVER_KEY_FILE),
        server_names: server_names(&options.sans),
    };
    if !options.force {
        for path in [&paths.ca_cert, &paths.ca_key] {
            if path.exists() {
                return Err(Error::CaExists { path: path.clone() });
            }
        }
    }
    let subject_alt_names = paths
        .server_names
        .iter()
        .map(|name| san(name))
        .collect::<Result<Vec<_>, _>>()?;
    create_private_dir(dir)?;

    let host = host_name();
    let ca_key = generate_key("CA key")?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params.distinguished_name.push(
        DnType::CommonName,
        match &host {
            Some(host) => format!("Fleetwire development CA ({host})"),
            None => "Fleetwire development CA".to_owned(),
        },
    );
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "Fleetwire");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (ca_params.not_before, ca_params.not_after) = validity(CA_DAYS);
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(|source| Error::Generate {
        what: "CA certificate",
        source,
    })?;

    let server_key = generate_key("server key")?;
    let mut server_params = CertificateParams::default();
    server_params.distinguished_name = rcgen::DistinguishedName::new();
    server_params.distinguished_name.push(
        DnType::CommonName,
        paths
            .server_names
            .first()
            .map_or("localhost", String::as_str),
    );
    server_params.subject_alt_names = subject_alt_names;
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.use_authority_key_identifier_extension = true;
    (server_params.not_before, server_params.not_after) = validity(SERVER_DAYS);
    let server = server_params
        .signed_by(&server_key, &ca)
        .map_err(|source| Error::Generate {
            what: "server certificate",
            source,
        })?;

    write_file(&paths.ca_key, ca.key().serialize_pem().as_bytes(), true)?;
    write_file(&paths.ca_cert, ca.pem().as_bytes(), false)?;
    write_file(
        &paths.server_key,
        server_key.serialize_pem().as_bytes(),
        true,
    )?;
    write_file(&paths.server_cert, server.pem().as_bytes(), false)?;
    Ok(paths)
}

/// Issues a client certificate for `device` (subject CN = the device id, extended key
/// usage clientAuth, valid for `days`, 1 to [`MAX_DEVICE_DAYS`]) signed by the CA in
/// `dir`, and writes it to `<out>/<id>.pem` and its key to `<out>/<id>.key` (mode 0600),
/// replacing earlier ones; `out` is created if need be. Prints nothing.
pub fn issue_device(
    dir: &Path,
    device: &DeviceId,
    out: &Path,
    days: u32,
) -> Result<DevicePaths, Error> {
    if !(1..=MAX_DEVICE_DAYS).contains(&days) {
        return Err(Error::InvalidDays {
            days,
            max: MAX_DEVICE_DAYS,
        });
    }
    let ca_cert_file = dir.join(CA_CERT_FILE);
    let ca_key_file = dir.join(CA_KEY_FILE);
    let ca_pem = read_text(&ca_cert_file)?;
    let ca_key_pem = read_text(&ca_key_file)?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|source| Error::InvalidCaFiles {
        path: ca_key_file.clone(),
        source,
    })?;
    check_ca_key(&ca_key, &ca_cert_file, &ca_key_file)?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|source| Error::InvalidCaFiles {
            path: ca_cert_file.clone(),
            source,
        })?;

    let key = generate_key("device key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, device.as_str());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let (not_before, not_after) = validity(days);
    (params.not_before, params.not_after) = (not_before, not_after);
    let certificate = params
        .signed_by(&key, &issuer)
        .map_err(|source| Error::Generate {
            what: "device certificate",
            source,
        })?;

    std::fs::create_dir_all(out).map_err(|source| Error::Write {
        path: out.to_owned(),
        source,
    })?;
    let paths = DevicePaths {
        cert: out.join(format!("{}.pem", device.as_str())),
        key: out.join(format!("{}.key", device.as_str())),
        fingerprint: Fingerprint::of(certificate.der()),
        not_after: Timestamp::from_millis(not_after.unix_timestamp().saturating_mul(1000)),
    };
    write_file(&paths.key, key.serialize_pem().as_bytes(), true)?;
    write_file(&paths.cert, certificate.pem().as_bytes(), false)?;
    Ok(paths)
}

/// The server certificate's names: `sans`, then `localhost`, `127.0.0.1`, `::1` and the
/// host name, each once (DNS names compared without case).
fn server_names(sans: &[String]) -> Vec<String> {
    let defaults = ["localhost", "127.0.0.1", "::1"].map(str::to_owned);
    let mut names: Vec<String> = Vec::new();
    for name in sans.iter().cloned().chain(defaults).chain(host_name()) {
        if !names
            .iter()
            .any(|known| known.eq_ignore_ascii_case(&name) || same_ip(known, &name))
        {
            names.push(name);
        }
    }
    names
}

fn same_ip(left: &str, right: &str) -> bool {
    match (left.parse::<IpAddr>(), right.parse::<IpAddr>()) {
        (Ok(left), Ok(right)) => left == right,
        _ => false,
    }
}

fn san(name: &str) -> Result<SanType, Error> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let invalid = || Error::InvalidSan {
        name: name.to_owned(),
    };
    if !is_dns_name(name) {
        return Err(invalid());
    }
    rcgen::string::Ia5String::try_from(name)
        .map(SanType::DnsName)
        .map_err(|_| invalid())
}

/// Letters, digits, `-`, `.` and `*` (wildcards), at most 253 of them.
fn is_dns_name(name: &str) -> bool {
    (1..=253).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'*'))
}

/// This machine's host name, if the kernel tells it and it can be a DNS name.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (is_dns_name(name) && !name.contains('*')).then(|| name.to_owned())
}

fn generate_key(what: &'static str) -> Result<KeyPair, Error> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|source| Error::Generate { what, source })
}

/// From an hour ago to `days` from now.
fn validity(days: u32) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (
        now - time::Duration::HOUR,
        now + time::Duration::days(i64::from(days)),
    )
}

/// Checks that `key` is the key of the CA certificate: a mismatch would issue
/// certificates nobody can verify.
fn check_ca_key(key: &KeyPair, cert_file: &Path, key_file: &Path) -> Result<(), Error> {
    let ders = crate::config::read_certificates(cert_file)?;
    let Some(der) = ders.first() else {
        return Err(Error::NoCertificate {
            path: cert_file.to_owned(),
        });
    };
    let (_, certificate) =
        x509_parser::parse_x509_certificate(der).map_err(|source| Error::InvalidCertificate {
            what: cert_file.display().to_string(),
            source: source.into(),
        })?;
    if certificate.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(Error::KeyMismatch {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
        });
    }
    Ok(())
}

fn read_text(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

fn create_private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| Error::Write {
            path: dir.to_owned(),
            source,
        })
}

/// Writes `contents` to `path` through a temporary file in the same directory and a
/// rename; `private` files get mode 0600 from their creation.
fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let error = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&temporary)
        .map_err(error)?;
    file.write_all(contents).map_err(error)?;
    file.sync_all().map_err(error)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(error)
}
