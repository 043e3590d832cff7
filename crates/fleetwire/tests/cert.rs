//! `fleetwire cert init` and `fleetwire device cert` as a user runs them: the real binary
//! writes the files, and OpenSSL (when installed) reads and verifies them.

// Test helpers fail loudly on purpose.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BINARY: &str = env!("CARGO_BIN_EXE_fleetwire");

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fleetwire(args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .env_remove("FLEETWIRE_URL")
        .env_remove("FLEETWIRE_TOKEN")
        .output()
        .unwrap()
}

fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `openssl ARGS...`'s standard output, or `None` when OpenSSL is not installed.
fn openssl(args: &[&str]) -> Option<String> {
    let output = Command::new("openssl").args(args).output().ok()?;
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8(output.stdout).unwrap())
}

#[test]
fn cert_init_then_device_cert_write_a_pki_that_openssl_verifies() {
    let temp =
        TempDir(std::env::temp_dir().join(format!("fleetwire-cert-cli-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&temp.0);
    let data_dir = temp.0.join("data");
    let out = temp.0.join("out");

    let init = fleetwire(&[
        "cert",
        "init",
        "--data-dir",
        text(&data_dir),
        "--san",
        "example.test",
    ]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let printed = String::from_utf8(init.stdout).unwrap();
    assert!(printed.contains("mosquitto_pub --cafile"), "{printed}");
    assert!(printed.contains("example.test"), "{printed}");
    let tls = data_dir.join("tls");
    for name in ["ca.pem", "ca.key", "server.pem", "server.key"] {
        assert!(tls.join(name).is_file(), "{name}");
    }

    let again = fleetwire(&["cert", "init", "--data-dir", text(&data_dir)]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let bad_id = fleetwire(&["device", "cert", "dev/1", "--data-dir", text(&data_dir)]);
    assert!(!bad_id.status.success());
    assert!(String::from_utf8_lossy(&bad_id.stderr).contains("device id"));

    let issue = fleetwire(&[
        "device",
        "cert",
        "dev-1",
        "--data-dir",
        text(&data_dir),
        "--out",
        text(&out),
        "--days",
        "30",
    ]);
    assert!(
        issue.status.success(),
        "{}",
        String::from_utf8_lossy(&issue.stderr)
    );
    let printed = String::from_utf8(issue.stdout).unwrap();
    assert!(printed.contains("--cert"), "{printed}");
    let (cert, key) = (out.join("dev-1.pem"), out.join("dev-1.key"));
    assert!(key.is_file());

    // Our own reading of the certificate.
    let info =
        fleetwire_tls::parse_certificate_pem(&std::fs::read_to_string(&cert).unwrap()).unwrap();
    assert_eq!(info.common_name.as_deref(), Some("dev-1"));
    assert!(printed.contains(&info.fingerprint.to_string()), "{printed}");

    // And OpenSSL's, an independent implementation.
    let ca = tls.join("ca.pem");
    if let Some(subject) = openssl(&["x509", "-in", text(&cert), "-noout", "-subject"]) {
        assert!(
            subject.contains("CN = dev-1") || subject.contains("CN=dev-1"),
            "{subject}"
        );
        let verified = openssl(&[
            "verify",
            "-CAfile",
            text(&ca),
            "-purpose",
            "sslclient",
            text(&cert),
        ])
        .unwrap();
        assert!(verified.contains("OK"), "{verified}");
        let server = tls.join("server.pem");
        let verified = openssl(&[
            "verify",
            "-CAfile",
            text(&ca),
            "-purpose",
            "sslserver",
            text(&server),
        ])
        .unwrap();
        assert!(verified.contains("OK"), "{verified}");
        let names = openssl(&[
            "x509",
            "-in",
            text(&server),
            "-noout",
            "-ext",
            "subjectAltName",
        ])
        .unwrap();
        for name in ["DNS:example.test", "DNS:localhost", "IP Address:127.0.0.1"] {
            assert!(names.contains(name), "{name} in {names}");
        }
    }
}
