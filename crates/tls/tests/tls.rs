//! The crate against real sockets and a real rustls client: a development PKI made by
//! `pki`, a server built by `server_config` (or a `TlsSource`) accepting with `accept`,
//! and tokio-rustls clients with and without certificates.

// Test helpers fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetwire_model::DeviceId;
use fleetwire_tls::{
    ClientCertificate, Error, Fingerprint, TlsFiles, TlsSource, accept, parse_certificate_pem, pki,
    server_config,
};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream as ClientStream;

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("fleetwire-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA and a server certificate in `<temp>/tls`.
fn init_pki(temp: &TempDir) -> pki::PkiPaths {
    pki::init(&temp.join("tls"), &pki::InitOptions::default()).unwrap()
}

fn device(temp: &TempDir, id: &str) -> pki::DevicePaths {
    let id = DeviceId::new(id).unwrap();
    pki::issue_device(&temp.join("tls"), &id, &temp.join("out"), 30).unwrap()
}

/// A server on a free port: every connection takes its configuration from `config`,
/// runs `accept`, reports the outcome, then echoes what it reads.
struct Server {
    addr: SocketAddr,
    outcomes: mpsc::UnboundedReceiver<Result<Option<ClientCertificate>, Error>>,
}

impl Server {
    async fn start(
        config: impl Fn() -> Arc<ServerConfig> + Send + Sync + 'static,
        timeout: Duration,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sender, outcomes) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(config());
                let sender = sender.clone();
                tokio::spawn(async move {
                    match accept(&acceptor, stream, timeout).await {
                        Ok((mut stream, identity)) => {
                            let _ = sender.send(Ok(identity));
                            let mut buffer = [0; 1024];
                            while let Ok(read @ 1..) = stream.read(&mut buffer).await {
                                if stream.write_all(&buffer[..read]).await.is_err() {
                                    break;
                                }
                            }
                        }
                        Err(error) => {
                            let _ = sender.send(Err(error));
                        }
                    }
                });
            }
        });
        Server { addr, outcomes }
    }

    async fn next_outcome(&mut self) -> Result<Option<ClientCertificate>, Error> {
        tokio::time::timeout(Duration::from_secs(5), self.outcomes.recv())
            .await
            .expect("an outcome within 5 s")
            .expect("the server runs")
    }
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A client trusting `ca_file`, speaking `version`, with an optional certificate and key
/// (PEM).
struct Client {
    ca_file: PathBuf,
    version: &'static rustls::SupportedProtocolVersion,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    alpn: Vec<Vec<u8>>,
}

impl Client {
    fn trusting(ca_file: &Path) -> Client {
        Client {
            ca_file: ca_file.to_owned(),
            version: &rustls::version::TLS13,
            identity: None,
            alpn: Vec::new(),
        }
    }

    fn with_files(mut self, device: &pki::DevicePaths) -> Client {
        self.identity = Some((
            std::fs::read(&device.cert).unwrap(),
            std::fs::read(&device.key).unwrap(),
        ));
        self
    }

    fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_file_iter(&self.ca_file).unwrap() {
            roots.add(certificate.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[self.version])
        .unwrap()
        .with_root_certificates(roots);
        let mut config = match &self.identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(cert)
                        .collect::<Result<_, _>>()
                        .unwrap(),
                    PrivateKeyDer::from_pem_slice(key).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.clone();
        TlsConnector::from(Arc::new(config))
    }

    async fn connect(&self, addr: SocketAddr) -> std::io::Result<ClientStream<TcpStream>> {
        let stream = TcpStream::connect(addr).await?;
        self.connector()
            .connect(ServerName::try_from("localhost").unwrap(), stream)
            .await
    }
}

/// Sends `text` and reads it back.
async fn echo(stream: &mut ClientStream<TcpStream>, text: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(text).await?;
    let mut back = vec![0; text.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
        .await
        .map_err(|_| std::io::Error::other("no echo within 5 s"))??;
    Ok(back)
}

fn served_certificate(stream: &ClientStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn first_der(path: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn tls13_and_tls12_handshakes_succeed_without_a_client_certificate() {
    let temp = TempDir::new("versions");
    let paths = init_pki(&temp);
    let config = server_config(&paths.tls_files()).unwrap();
    let mut server = Server::start(move || Arc::clone(&config), HANDSHAKE_TIMEOUT).await;
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let client = Client {
            version,
            ..Client::trusting(&paths.ca_cert)
        };
        let mut stream = client.connect(server.addr).await.unwrap();
        assert_eq!(stream.get_ref().1.protocol_version(), Some(version.version));
        assert_eq!(echo(&mut stream, b"ping").await.unwrap(), b"ping");
        assert_eq!(server.next_outcome().await.unwrap(), None);
    }
}

#[tokio::test]
async fn a_device_certificate_names_the_device_and_its_fingerprint() {
    let temp = TempDir::new("identity");
    let paths = init_pki(&temp);
    let issued = device(&temp, "dev-1");
    let config = server_config(&paths.tls_files()).unwrap();
    let mut server = Server::start(move || Arc::clone(&config), HANDSHAKE_TIMEOUT).await;
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let client = Client {
            version,
            ..Client::trusting(&paths.ca_cert).with_files(&issued)
        };
        let mut stream = client.connect(server.addr).await.unwrap();
        assert_eq!(echo(&mut stream, b"hello").await.unwrap(), b"hello");
        let der = first_der(&issued.cert);
        let expected = Fingerprint(Sha256::digest(&der).into());
        assert_eq!(
            server.next_outcome().await.unwrap(),
            Some(ClientCertificate {
                common_name: "dev-1".to_owned(),
                fingerprint: expected,
            })
        );
        assert_eq!(issued.fingerprint, expected);
    }
}

#[tokio::test]
async fn a_certificate_from_another_ca_fails_the_handshake() {
    let temp = TempDir::new("other-ca");
    let other = TempDir::new("other-ca-2");
    let paths = init_pki(&temp);
    init_pki(&other);
    let stranger = device(&other, "dev-1");
    let config = server_config(&paths.tls_files()).unwrap();
    let mut server = Server::start(move || Arc::clone(&config), HANDSHAKE_TIMEOUT).await;
    let client = Client::trusting(&paths.ca_cert).with_files(&stranger);
    // In TLS 1.3 the client may finish before the server has checked its certificate;
    // it then learns of the refusal at its first read.
    if let Ok(mut stream) = client.connect(server.addr).await {
        assert!(echo(&mut stream, b"x").await.is_err());
    }
    let outcome = server.next_outcome().await;
    assert!(
        matches!(outcome, Err(Error::Handshake { .. })),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn an_expired_certificate_fails_the_handshake() {
    let temp = TempDir::new("expired");
    let paths = init_pki(&temp);
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(&paths.ca_key).unwrap()).unwrap();
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&std::fs::read_to_string(&paths.ca_cert).unwrap(), ca_key)
            .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dev-old");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let certificate = params.signed_by(&key, &issuer).unwrap();
    let client = Client {
        identity: Some((
            certificate.pem().into_bytes(),
            key.serialize_pem().into_bytes(),
        )),
        ..Client::trusting(&paths.ca_cert)
    };
    let config = server_config(&paths.tls_files()).unwrap();
    let mut server = Server::start(move || Arc::clone(&config), HANDSHAKE_TIMEOUT).await;
    if let Ok(mut stream) = client.connect(server.addr).await {
        assert!(echo(&mut stream, b"x").await.is_err());
    }
    let outcome = server.next_outcome().await;
    let Err(Error::Handshake { source, .. }) = &outcome else {
        panic!("expected a handshake error, got {outcome:?}");
    };
    assert!(source.to_string().contains("xpired"), "{source}");
}

#[tokio::test]
async fn plain_mqtt_fails_at_once_and_silence_times_out() {
    let temp = TempDir::new("plain");
    let paths = init_pki(&temp);
    let config = server_config(&paths.tls_files()).unwrap();
    let timeout = Duration::from_millis(300);
    let mut server = Server::start(move || Arc::clone(&config), timeout).await;

    // CONNECT, MQTT 3.1.1, clean session, keep-alive 60, client id "c".
    let connect = [
        0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x01, b'c',
    ];
    let started = Instant::now();
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain.write_all(&connect).await.unwrap();
    let outcome = server.next_outcome().await;
    assert!(
        matches!(outcome, Err(Error::Handshake { .. })),
        "{outcome:?}"
    );
    assert!(started.elapsed() < timeout, "took {:?}", started.elapsed());

    let started = Instant::now();
    let _silent = TcpStream::connect(server.addr).await.unwrap();
    let outcome = server.next_outcome().await;
    assert!(
        matches!(outcome, Err(Error::HandshakeTimeout { timeout: t, .. }) if t == timeout),
        "{outcome:?}"
    );
    assert!(started.elapsed() >= timeout);
}

#[tokio::test]
async fn a_reload_serves_the_new_certificate_and_keeps_established_connections() {
    let temp = TempDir::new("reload");
    let paths = init_pki(&temp);
    let source = Arc::new(TlsSource::load(paths.tls_files()).unwrap());
    let served = Arc::clone(&source);
    let mut server = Server::start(move || served.current(), HANDSHAKE_TIMEOUT).await;

    let old_ca = temp.join("old-ca.pem");
    std::fs::copy(&paths.ca_cert, &old_ca).unwrap();
    let old_der = first_der(&paths.server_cert);
    let mut before = Client::trusting(&old_ca)
        .connect(server.addr)
        .await
        .unwrap();
    server.next_outcome().await.unwrap();
    assert_eq!(served_certificate(&before), old_der);

    let options = pki::InitOptions {
        force: true,
        ..pki::InitOptions::default()
    };
    pki::init(&temp.join("tls"), &options).unwrap();
    source.reload().unwrap();
    assert_eq!((source.reloads(), source.reload_failures()), (1, 0));

    let after = Client::trusting(&paths.ca_cert)
        .connect(server.addr)
        .await
        .unwrap();
    server.next_outcome().await.unwrap();
    assert_eq!(served_certificate(&after), first_der(&paths.server_cert));
    assert_ne!(served_certificate(&after), old_der);
    assert_eq!(
        echo(&mut before, b"still here").await.unwrap(),
        b"still here"
    );
}

#[tokio::test]
async fn a_bad_file_fails_the_reload_and_the_old_certificate_stays() {
    let temp = TempDir::new("bad-reload");
    let paths = init_pki(&temp);
    let source = Arc::new(TlsSource::load(paths.tls_files()).unwrap());
    let served = Arc::clone(&source);
    let mut server = Server::start(move || served.current(), HANDSHAKE_TIMEOUT).await;
    let old_der = first_der(&paths.server_cert);

    std::fs::write(&paths.server_cert, "garbage, not a certificate\n").unwrap();
    let error = source.reload().unwrap_err();
    assert!(matches!(error, Error::NoCertificate { .. }), "{error:?}");
    assert!(error.to_string().contains("server.pem"), "{error}");
    assert_eq!((source.reloads(), source.reload_failures()), (0, 1));

    let stream = Client::trusting(&paths.ca_cert)
        .connect(server.addr)
        .await
        .unwrap();
    server.next_outcome().await.unwrap();
    assert_eq!(served_certificate(&stream), old_der);
}

#[tokio::test]
async fn the_watcher_reloads_changed_files_by_itself() {
    let temp = TempDir::new("watch");
    let paths = init_pki(&temp);
    let source = Arc::new(TlsSource::load(paths.tls_files()).unwrap());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let watcher = source.watch(shutdown);
    let served = Arc::clone(&source);
    let mut server = Server::start(move || served.current(), HANDSHAKE_TIMEOUT).await;

    let options = pki::InitOptions {
        force: true,
        ..pki::InitOptions::default()
    };
    pki::init(&temp.join("tls"), &options).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while source.reloads() == 0 {
        assert!(Instant::now() < deadline, "no reload within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stream = Client::trusting(&paths.ca_cert)
        .connect(server.addr)
        .await
        .unwrap();
    server.next_outcome().await.unwrap();
    assert_eq!(served_certificate(&stream), first_der(&paths.server_cert));

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), watcher)
        .await
        .expect("the watcher stops")
        .unwrap();
}

#[tokio::test]
async fn alpn_variants_are_offered_per_listener() {
    let temp = TempDir::new("alpn");
    let paths = init_pki(&temp);
    let source = Arc::new(TlsSource::load(paths.tls_files()).unwrap());
    let served = Arc::clone(&source);
    let mut server = Server::start(
        move || served.current_with_alpn(&[b"mqtt"]),
        HANDSHAKE_TIMEOUT,
    )
    .await;
    let client = Client {
        alpn: vec![b"mqtt".to_vec()],
        ..Client::trusting(&paths.ca_cert)
    };
    let stream = client.connect(server.addr).await.unwrap();
    server.next_outcome().await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"mqtt"[..]));
    // The variant is rebuilt at a reload, with the new files.
    source.reload().unwrap();
    assert_eq!(
        source.current_with_alpn(&[b"mqtt"]).alpn_protocols,
        vec![b"mqtt".to_vec()]
    );
    assert!(source.current().alpn_protocols.is_empty());
}

#[test]
fn init_refuses_to_replace_a_ca_without_force() {
    let temp = TempDir::new("force");
    let first = first_der(&init_pki(&temp).server_cert);
    let error = pki::init(&temp.join("tls"), &pki::InitOptions::default()).unwrap_err();
    assert!(matches!(error, Error::CaExists { .. }), "{error:?}");
    assert!(error.to_string().contains("--force"), "{error}");
    let options = pki::InitOptions {
        sans: vec!["example.test".to_owned(), "10.0.0.7".to_owned()],
        force: true,
    };
    let second = pki::init(&temp.join("tls"), &options).unwrap();
    assert_ne!(first, first_der(&second.server_cert));
    assert_eq!(&second.server_names[..2], ["example.test", "10.0.0.7"]);
    for name in ["localhost", "127.0.0.1", "::1"] {
        assert!(
            second.server_names.iter().any(|known| known == name),
            "{name}"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    for key in [&second.ca_key, &second.server_key] {
        let mode = std::fs::metadata(key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", key.display());
    }
    let bad = pki::InitOptions {
        sans: vec!["not a name".to_owned()],
        force: true,
    };
    assert!(matches!(
        pki::init(&temp.join("tls"), &bad),
        Err(Error::InvalidSan { .. })
    ));
}

#[test]
fn server_config_names_what_is_wrong_with_the_files() {
    let temp = TempDir::new("config-errors");
    let paths = init_pki(&temp);
    let good = paths.tls_files();
    let empty = temp.join("empty.pem");
    std::fs::write(&empty, "").unwrap();

    let missing = TlsFiles {
        cert_file: temp.join("nope.pem"),
        ..good.clone()
    };
    assert!(matches!(server_config(&missing), Err(Error::Read { .. })));
    let mismatch = TlsFiles {
        key_file: paths.ca_key.clone(),
        ..good.clone()
    };
    assert!(matches!(
        server_config(&mismatch),
        Err(Error::KeyMismatch { .. })
    ));
    let no_key = TlsFiles {
        key_file: paths.server_cert.clone(),
        ..good.clone()
    };
    assert!(matches!(
        server_config(&no_key),
        Err(Error::NoPrivateKey { .. })
    ));
    let no_certificate = TlsFiles {
        cert_file: paths.server_key.clone(),
        ..good.clone()
    };
    assert!(matches!(
        server_config(&no_certificate),
        Err(Error::NoCertificate { .. })
    ));
    let empty_ca = TlsFiles {
        client_ca_file: Some(empty.clone()),
        ..good.clone()
    };
    let error = server_config(&empty_ca).unwrap_err();
    assert!(matches!(error, Error::EmptyCaBundle { .. }), "{error:?}");
    assert!(error.to_string().contains("empty.pem"), "{error}");
    let without_client_ca = TlsFiles {
        client_ca_file: None,
        ..good
    };
    assert!(server_config(&without_client_ca).is_ok());
}

#[test]
fn parse_certificate_pem_reads_one_certificate() {
    let temp = TempDir::new("parse");
    let paths = init_pki(&temp);
    let issued = device(&temp, "dev-1");
    let pem = std::fs::read_to_string(&issued.cert).unwrap();
    let info = parse_certificate_pem(&pem).unwrap();
    assert_eq!(info.common_name.as_deref(), Some("dev-1"));
    assert_eq!(info.fingerprint, issued.fingerprint);
    assert!(
        info.issuer.contains("Fleetwire development CA"),
        "{}",
        info.issuer
    );
    let now = fleetwire_time::Timestamp::now();
    assert!(info.not_before < now && now < info.not_after);
    assert_eq!(info.not_after, issued.not_after);

    // A key beside the certificate is ignored.
    let key = std::fs::read_to_string(&issued.key).unwrap();
    assert_eq!(parse_certificate_pem(&format!("{key}{pem}")).unwrap(), info);

    assert!(matches!(parse_certificate_pem("hello"), Err(Error::NotPem)));
    assert!(matches!(
        parse_certificate_pem(&key),
        Err(Error::NoCertificateInText)
    ));
    let ca = std::fs::read_to_string(&paths.ca_cert).unwrap();
    assert!(matches!(
        parse_certificate_pem(&format!("{pem}{ca}")),
        Err(Error::SeveralCertificates { count: 2 })
    ));
    let damaged = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert!(matches!(
        parse_certificate_pem(damaged),
        Err(Error::InvalidCertificate { .. })
    ));
    let unfinished = "-----BEGIN CERTIFICATE-----\nAAAA\n";
    assert!(matches!(
        parse_certificate_pem(unfinished),
        Err(Error::Pem { .. })
    ));
}

#[test]
fn issue_device_needs_a_ca_and_a_sane_validity() {
    let temp = TempDir::new("issue");
    let id = DeviceId::new("dev-1").unwrap();
    let error = pki::issue_device(&temp.join("tls"), &id, &temp.join("out"), 30).unwrap_err();
    assert!(matches!(error, Error::Read { .. }), "{error:?}");
    assert!(error.to_string().contains("ca.pem"), "{error}");
    init_pki(&temp);
    assert!(matches!(
        pki::issue_device(&temp.join("tls"), &id, &temp.join("out"), 0),
        Err(Error::InvalidDays { .. })
    ));
    let issued = pki::issue_device(&temp.join("tls"), &id, &temp.join("out"), 2).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&issued.key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(issued.cert, temp.join("out").join("dev-1.pem"));
}
