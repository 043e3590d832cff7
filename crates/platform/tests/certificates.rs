//! Devices logging in over MQTT with a TLS client certificate, and the certificates pinned
//! to them: through the platform's door (the hooks' authenticator, the façade's verbs), on
//! a real registry, with a recording MQTT link to see who is disconnected.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;

use fleetwire_broker::{Access, Credentials, Denial, PeerCertificate};
use fleetwire_model::Fingerprint;
use fleetwire_platform::{Error, Platform};
use sha2::{Digest as _, Sha256};
use support::{Node, create_device, device_id};

/// A self-signed certificate whose subject's common name is `common_name`, as PEM, and
/// what the TLS handshake would hand the authenticator for it.
fn certificate(common_name: &str) -> (String, PeerCertificate) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let certificate = params.self_signed(&key).unwrap();
    let peer = PeerCertificate {
        common_name: common_name.to_owned(),
        fingerprint: Sha256::digest(certificate.der()).into(),
    };
    (certificate.pem(), peer)
}

/// What the hooks' authenticator answers to a client presenting `certificate`, with
/// `username` and `password` if given.
async fn log_in(
    platform: &Platform,
    certificate: &PeerCertificate,
    username: Option<&str>,
    password: Option<&str>,
) -> Result<Access, Denial> {
    let authenticator = platform.mqtt_hooks().authenticator.unwrap();
    let peer: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    authenticator
        .authenticate(Credentials {
            client_id: "client",
            username,
            password: password.map(str::as_bytes),
            peer,
            certificate: Some(certificate),
        })
        .await
}

fn user_of(access: &Access) -> Option<&str> {
    access.user_name().map(|name| &**name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_device_logs_in_with_its_certificate_and_no_password() {
    let node = Node::start().await;
    let platform = &node.platform;
    create_device(platform, "d1").await;
    let (_, d1) = certificate("d1");

    let access = log_in(platform, &d1, None, None).await.unwrap();
    assert_eq!(user_of(&access), Some("d1"));
    // The device's usual access: its own topics only.
    assert_eq!(access, fleetwire_platform::device_access(&device_id("d1")));

    // With its own id as user name, and a password that is not its secret (ignored).
    let access = log_in(platform, &d1, Some("d1"), Some("not-the-secret"))
        .await
        .unwrap();
    assert_eq!(user_of(&access), Some("d1"));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_login_with_another_user_name_is_refused() {
    let node = Node::start().await;
    let platform = &node.platform;
    create_device(platform, "d1").await;
    create_device(platform, "d2").await;
    let (_, d1) = certificate("d1");
    // Even with d2's real secret: the certificate says d1.
    let (d2_secret, _) = platform.issue_credentials(&device_id("d2")).await.unwrap();

    assert_eq!(
        log_in(platform, &d1, Some("d2"), Some(&d2_secret))
            .await
            .err(),
        Some(Denial::NotAuthorized)
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_of_an_unregistered_or_invalid_device_id_is_refused() {
    let node = Node::start().await;
    let platform = &node.platform;
    let (_, ghost) = certificate("ghost");
    assert_eq!(
        log_in(platform, &ghost, None, None).await.err(),
        Some(Denial::NotAuthorized)
    );
    let (_, not_an_id) = certificate("boiler room/7");
    assert_eq!(
        log_in(platform, &not_an_id, None, None).await.err(),
        Some(Denial::NotAuthorized)
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_a_certificate_is_pinned_only_it_logs_the_device_in() {
    let node = Node::start().await;
    let platform = &node.platform;
    let d1 = device_id("d1");
    create_device(platform, "d1").await;
    let (pinned_pem, pinned) = certificate("d1");
    let (_, other) = certificate("d1");
    assert!(log_in(platform, &other, None, None).await.is_ok());

    let (pin, created) = platform.pin_certificate(&d1, &pinned_pem).await.unwrap();
    assert!(created);
    assert_eq!(pin.fingerprint, Fingerprint::from_bytes(pinned.fingerprint));
    assert_eq!(pin.common_name.as_deref(), Some("d1"));
    assert!(pin.not_after.is_some_and(|at| at > pin.added_at), "{pin:?}");
    // Connections made before (perhaps with the other certificate) are closed.
    assert_eq!(node.link.disconnected(), ["d1"]);

    assert_eq!(
        log_in(platform, &other, None, None).await.err(),
        Some(Denial::NotAuthorized)
    );
    let access = log_in(platform, &pinned, Some("d1"), None).await.unwrap();
    assert_eq!(user_of(&access), Some("d1"));

    // Pinning it again changes nothing, so nobody is disconnected.
    let (again, created) = platform.pin_certificate(&d1, &pinned_pem).await.unwrap();
    assert!(!created);
    assert_eq!(again, pin);
    assert_eq!(platform.certificates(&d1).await.unwrap(), [pin]);
    assert_eq!(node.link.disconnected(), ["d1"]);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpinning_a_certificate_disconnects_the_device_and_refuses_that_certificate() {
    let node = Node::start().await;
    let platform = &node.platform;
    let d1 = device_id("d1");
    create_device(platform, "d1").await;
    let (first_pem, first) = certificate("d1");
    let (second_pem, second) = certificate("d1");
    platform.pin_certificate(&d1, &first_pem).await.unwrap();
    platform.pin_certificate(&d1, &second_pem).await.unwrap();
    assert_eq!(node.link.disconnected(), ["d1", "d1"]);

    let fingerprint = Fingerprint::from_bytes(first.fingerprint);
    platform.unpin_certificate(&d1, &fingerprint).await.unwrap();
    assert_eq!(node.link.disconnected(), ["d1", "d1", "d1"]);
    assert_eq!(
        log_in(platform, &first, None, None).await.err(),
        Some(Denial::NotAuthorized)
    );
    assert!(log_in(platform, &second, None, None).await.is_ok());

    // Twice: not found, and nobody is disconnected.
    let error = platform
        .unpin_certificate(&d1, &fingerprint)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::NotFound {
                kind: "certificate",
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(node.link.disconnected().len(), 3);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_device_removes_its_pins() {
    let node = Node::start().await;
    let platform = &node.platform;
    let d1 = device_id("d1");
    create_device(platform, "d1").await;
    let (pinned_pem, _) = certificate("d1");
    let (_, other) = certificate("d1");
    platform.pin_certificate(&d1, &pinned_pem).await.unwrap();
    platform.delete_device(&d1).await.unwrap();
    assert!(matches!(
        platform.certificates(&d1).await,
        Err(Error::NotFound { kind: "device", .. })
    ));

    // Registered again, it starts without pins: any certificate of its CA logs it in.
    create_device(platform, "d1").await;
    assert_eq!(platform.certificates(&d1).await.unwrap(), []);
    assert!(log_in(platform, &other, None, None).await.is_ok());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_certificate_naming_the_device_can_be_pinned() {
    let node = Node::start().await;
    let platform = &node.platform;
    let d1 = device_id("d1");
    create_device(platform, "d1").await;
    let (d1_pem, _) = certificate("d1");
    let (d2_pem, _) = certificate("d2");
    let cases = [
        ("hello", "not PEM"),
        (
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "no certificate",
        ),
        (
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "certificate",
        ),
        (
            &format!("{d1_pem}{d1_pem}"),
            "exactly one certificate, got 2",
        ),
        (&d2_pem, "\"d2\": expected the common name \"d1\""),
    ];
    for (pem, expected) in cases {
        let error = platform.pin_certificate(&d1, pem).await.unwrap_err();
        assert!(
            matches!(error, Error::InvalidCertificate { .. }),
            "{pem}: {error:?}"
        );
        assert!(error.to_string().contains(expected), "{pem}: {error}");
    }
    assert_eq!(platform.certificates(&d1).await.unwrap(), []);
    assert!(node.link.disconnected().is_empty());

    // An unknown device: not found, whatever the certificate.
    let (ghost_pem, _) = certificate("ghost");
    let error = platform
        .pin_certificate(&device_id("ghost"), &ghost_pem)
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::NotFound { kind: "device", .. }),
        "{error:?}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_by_secret_are_unchanged_by_pins() {
    let node = Node::start().await;
    let platform = &node.platform;
    let d1 = device_id("d1");
    create_device(platform, "d1").await;
    let (secret, _) = platform.issue_credentials(&d1).await.unwrap();
    let (pem, _) = certificate("d1");
    platform.pin_certificate(&d1, &pem).await.unwrap();

    let authenticator = platform.mqtt_hooks().authenticator.unwrap();
    for (password, expected) in [
        (secret.as_bytes(), Ok(())),
        (b"wrong".as_slice(), Err(Denial::BadCredentials)),
    ] {
        let credentials = Credentials {
            client_id: "d1",
            username: Some("d1"),
            password: Some(password),
            peer: "127.0.0.1:50000".parse().unwrap(),
            certificate: None,
        };
        let answer = authenticator.authenticate(credentials).await;
        assert_eq!(answer.map(|_| ()), expected);
    }
    node.stop().await;
}
