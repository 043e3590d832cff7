//! `fleetwire cert init` and `fleetwire device cert`: the development PKI of
//! [`fleetwire_tls::pki`] in the data directory's `tls/`, on this machine (neither needs
//! a running server). They print what they wrote and how to use it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use fleetwire_model::DeviceId;
use fleetwire_tls::pki;

use crate::config::DEFAULT_DATA_DIR;

/// The PKI directory inside a data directory.
const TLS_DIR: &str = "tls";

/// `fleetwire cert ...`.
#[derive(Debug, Args)]
pub(crate) struct CertArgs {
    #[command(subcommand)]
    command: CertCommand,
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// Create a development CA and a server certificate in DATA_DIR/tls/.
    ///
    /// Writes ca.pem, ca.key, server.pem and server.key (ECDSA P-256; the CA is valid 10
    /// years, the server certificate 1 year). Then issue device certificates with
    /// `fleetwire device cert`.
    Init {
        /// Data directory [default: ./fleetwire-data].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Another name clients use for the server: a DNS name or an IP address; repeat
        /// for several. localhost, 127.0.0.1, ::1 and the host name are always included.
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
        /// Replace an existing CA (certificates it issued will no longer be trusted).
        #[arg(long)]
        force: bool,
    },
}

/// The TLS files of `fleetwire demo --tls`: the development PKI in `data_dir/tls/`,
/// made first if it is not there, with the CA as the client CA (device certificates
/// from `fleetwire device cert` log in).
pub(crate) fn development_files(data_dir: &Path) -> anyhow::Result<fleetwire_tls::TlsFiles> {
    let dir = data_dir.join(TLS_DIR);
    let ca = dir.join(pki::CA_CERT_FILE);
    let (cert_file, key_file) = (
        dir.join(pki::SERVER_CERT_FILE),
        dir.join(pki::SERVER_KEY_FILE),
    );
    if !(ca.is_file() && cert_file.is_file() && key_file.is_file()) {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let paths = pki::init(&dir, &pki::InitOptions::default())?;
        tracing::info!(dir = %dir.display(), names = %paths.server_names.join(", "), "development CA and server certificate created");
    }
    Ok(fleetwire_tls::TlsFiles {
        cert_file,
        key_file,
        client_ca_file: Some(ca),
    })
}

/// Runs `fleetwire cert ...`.
pub(crate) fn run(args: CertArgs) -> anyhow::Result<()> {
    match args.command {
        CertCommand::Init {
            data_dir,
            sans,
            force,
        } => init(data_dir.as_deref(), sans, force),
    }
}

fn init(data_dir: Option<&Path>, sans: Vec<String>, force: bool) -> anyhow::Result<()> {
    let data_dir = data_dir.unwrap_or_else(|| Path::new(DEFAULT_DATA_DIR));
    let dir = data_dir.join(TLS_DIR);
    let paths = pki::init(&dir, &pki::InitOptions { sans, force })?;
    println!(
        "Created a development CA and a server certificate in {}:\n\
         \x20 {:<40} the CA certificate: give it to clients (valid {} days)\n\
         \x20 {:<40} the CA key: keep it here, it signs device certificates\n\
         \x20 {:<40} the server certificate (valid {} days) for {}\n\
         \x20 {:<40} the server key\n",
        dir.display(),
        paths.ca_cert.display(),
        pki::CA_DAYS,
        paths.ca_key.display(),
        paths.server_cert.display(),
        pki::SERVER_DAYS,
        paths.server_names.join(", "),
        paths.server_key.display(),
    );
    println!(
        "Serve TLS with them (configuration file):\n\
         \x20 [tls]\n\
         \x20 cert_file = {:?}\n\
         \x20 key_file = {:?}\n\
         \x20 client_ca_file = {:?}\n\n\
         Then connect, for example:\n\
         \x20 mosquitto_pub --cafile {} -h localhost -p 8883 -u DEVICE_ID -P PASSWORD \\\n\
         \x20   -t devices/DEVICE_ID/telemetry -m '{{\"temperature\": 21.5}}'\n\n\
         Or give a device a certificate instead of a password:\n\
         \x20 fleetwire device cert DEVICE_ID --data-dir {}",
        paths.server_cert.display().to_string(),
        paths.server_key.display().to_string(),
        paths.ca_cert.display().to_string(),
        shell_word(&paths.ca_cert),
        shell_word(data_dir),
    );
    Ok(())
}

/// Runs `fleetwire device cert ID`.
pub(crate) fn issue_device(
    id: &str,
    data_dir: Option<&Path>,
    out: Option<PathBuf>,
    days: u32,
) -> anyhow::Result<()> {
    let device = DeviceId::new(id)?;
    let data_dir = data_dir.unwrap_or_else(|| Path::new(DEFAULT_DATA_DIR));
    let dir = data_dir.join(TLS_DIR);
    let ca_cert = dir.join(pki::CA_CERT_FILE);
    if !ca_cert.exists() {
        anyhow::bail!(
            "no development CA in {} (no {}): run `fleetwire cert init --data-dir {}` first",
            dir.display(),
            pki::CA_CERT_FILE,
            shell_word(data_dir)
        );
    }
    let out = out.unwrap_or_else(|| PathBuf::from("."));
    let issued = pki::issue_device(&dir, &device, &out, days)
        .with_context(|| format!("cannot issue a certificate for device {device}"))?;
    println!(
        "Issued a certificate for device {device}, valid until {}:\n\
         \x20 {:<40} the certificate (SHA-256 fingerprint {})\n\
         \x20 {:<40} its key: copy it to the device only\n\n\
         The device must be registered (`fleetwire device create --id {device}`). Connect \
         with it, for example:\n\
         \x20 mosquitto_pub --cafile {} --cert {} --key {} \\\n\
         \x20   -h localhost -p 8883 -i {device} -t devices/{device}/telemetry -m '{{\"temperature\": 21.5}}'",
        issued.not_after.to_rfc3339(),
        issued.cert.display(),
        issued.fingerprint,
        issued.key.display(),
        shell_word(&ca_cert),
        shell_word(&issued.cert),
        shell_word(&issued.key),
    );
    Ok(())
}

/// `path` as one shell word, quoted if it needs to be.
fn shell_word(path: &Path) -> String {
    let text = path.display().to_string();
    let is_plain = !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&byte));
    if is_plain {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_one_shell_word() {
        assert_eq!(
            shell_word(Path::new("./data/tls/ca.pem")),
            "./data/tls/ca.pem"
        );
        assert_eq!(shell_word(Path::new("my data/ca.pem")), "'my data/ca.pem'");
        assert_eq!(shell_word(Path::new("it's")), r"'it'\''s'");
    }
}
