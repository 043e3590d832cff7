//! `fleetwire serve` as a user runs it: the real binary, its flags, environment and
//! configuration file, first-start behaviour and clean shutdown.

// Test helpers fail loudly on purpose.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BINARY: &str = env!("CARGO_BIN_EXE_fleetwire");

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fleetwire-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A running `fleetwire serve` with JSON logs, and the addresses it reported.
struct Server {
    child: Child,
    mqtt_addr: String,
    http_addr: String,
    /// Log lines read while waiting for the listeners.
    early: Vec<String>,
    log: mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<()>,
}

fn command(data_dir: &Path) -> Command {
    subcommand("serve", data_dir)
}

/// `fleetwire <name>` (serve or demo) on free loopback ports with JSON logs.
fn subcommand(name: &str, data_dir: &Path) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args([
            "--log-format",
            "json",
            name,
            "--mqtt-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn start(mut command: Command) -> Server {
    let mut child = command.spawn().expect("fleetwire starts");
    let stderr = child.stderr.take().unwrap();
    let (sender, log) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut mqtt_addr = None;
    let mut http_addr = None;
    let mut early = Vec::new();
    while mqtt_addr.is_none() || http_addr.is_none() {
        let line = log
            .recv_timeout(Duration::from_secs(30))
            .expect("listening lines within 30 s");
        early.push(line.clone());
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let fields = &entry["fields"];
        if fields["message"] == "listening" {
            let addr = fields["addr"].as_str().unwrap().to_owned();
            match fields["protocol"].as_str() {
                Some("mqtt") => mqtt_addr = Some(addr),
                Some("http") => http_addr = Some(addr),
                other => panic!("unexpected protocol {other:?}"),
            }
        }
    }
    Server {
        child,
        mqtt_addr: mqtt_addr.unwrap(),
        http_addr: http_addr.unwrap(),
        early,
        log,
        reader,
    }
}

impl Server {
    /// Sends SIGTERM and returns the exit status code.
    fn terminate(mut self) -> (Option<i32>, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let output = self.child.wait().unwrap();
        let mut stdout = String::new();
        if let Some(mut pipe) = self.child.stdout.take() {
            std::io::Read::read_to_string(&mut pipe, &mut stdout).unwrap();
        }
        // The reader thread ends at end of file; after it, every line is in the channel.
        self.reader.join().unwrap();
        let rest: Vec<String> = self.log.try_iter().collect();
        (
            output.code(),
            format!("{stdout}\n{}\n{}", self.early.join("\n"), rest.join("\n")),
        )
    }
}

fn run_to_failure(command: &mut Command) -> (Option<i32>, String) {
    let output = command.output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn first_start_creates_a_private_admin_token_and_sigterm_exits_zero() {
    let dir = temp_dir("first-start");
    let server = start(command(&dir));
    let token_path = dir.join("admin.token");
    let token = std::fs::read_to_string(&token_path).unwrap();
    assert!(token.trim().starts_with("fw_"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let health = http_get(&server.http_addr, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let (code, output) = server.terminate();
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains(token.trim()),
        "the token is printed on first start"
    );
    assert!(output.contains("\"stopped\""), "{output}");

    // A second start reuses the token and does not print it.
    let server = start(command(&dir));
    let (code, output) = server.terminate();
    assert_eq!(code, Some(0));
    assert!(
        !output.contains(token.trim()),
        "the token is shown only once"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_admin_clis_environment_does_not_disturb_the_server() {
    // Users export these for `fleetwire device ...`; they are not server settings.
    let dir = temp_dir("cli-env");
    let mut command = command(&dir);
    command
        .env("FLEETWIRE_URL", "http://127.0.0.1:1")
        .env("FLEETWIRE_TOKEN", "a-token-for-the-cli");
    let server = start(command);
    let (code, output) = server.terminate();
    assert_eq!(code, Some(0), "{output}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn admin_token_from_the_environment_replaces_the_generated_one() {
    let dir = temp_dir("env-token");
    let mut command = command(&dir);
    command.env("FLEETWIRE_ADMIN_TOKEN", "a-token-chosen-by-the-operator");
    let server = start(command);
    assert!(!dir.join("admin.token").exists());
    let (code, output) = server.terminate();
    assert_eq!(code, Some(0), "{output}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn anonymous_mqtt_clients_are_refused_without_allow_anonymous() {
    use std::io::{Read, Write};
    let dir = temp_dir("anonymous");
    let server = start(command(&dir));
    let mut stream = std::net::TcpStream::connect(&server.mqtt_addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // CONNECT, MQTT 3.1.1, clean session, keep-alive 60, client id "a".
    stream
        .write_all(&[
            0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'a',
        ])
        .unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x05], "CONNACK: not authorized");
    server.terminate();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_environment_key_stops_start_up_naming_the_key() {
    let dir = temp_dir("unknown-env");
    let (code, stderr) = run_to_failure(command(&dir).env("FLEETWIRE_MQTT__MAX_INFLIGTH", "5"));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("mqtt.max_infligth"), "{stderr}");
}

#[test]
fn bad_value_in_the_config_file_stops_start_up_naming_the_key() {
    let dir = temp_dir("bad-file");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("fleetwire.toml");
    let refused = |toml: &str, expected: &str| {
        std::fs::write(&file, toml).unwrap();
        let (code, stderr) = run_to_failure(command(&dir).arg("--config").arg(&file));
        assert_eq!(code, Some(1), "{toml}");
        assert!(stderr.contains(expected), "{toml}: {stderr}");
    };
    refused(
        "[mqtt]\nmax_queued_messages = \"lots\"\n",
        "mqtt.max_queued_messages",
    );
    refused(
        "[mqtt]\nmax_inflight = 0\n",
        "mqtt.max_inflight must be between 1 and 65535, got 0",
    );
    refused(
        "[mqtt]\nreceive_maximum = 0\n",
        "mqtt.receive_maximum must be between 1 and 65535, got 0",
    );
    refused(
        "[mqtt]\nmax_keep_alive = 70000\n",
        "mqtt.max_keep_alive must be between 0 and 65535, got 70000",
    );
    refused(
        "[storage]\nwrite_linger_us = 200000\n",
        "storage.write_linger_us must be between 0 and 100000, got 200000",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn worker_threads_sets_the_runtime_size_and_is_checked() {
    let dir = temp_dir("worker-threads");
    let (code, stderr) = run_to_failure(command(&dir).env("FLEETWIRE_WORKER_THREADS", "5000"));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("worker_threads must be between 0 and 1024, got 5000"),
        "{stderr}"
    );
    let mut with_40 = command(&dir);
    with_40.env("FLEETWIRE_WORKER_THREADS", "40");
    let server = start(with_40);
    // The runtime's threads are named after the process, like its main thread; the
    // default (twice the cores, at least 4) never comes near 40.
    let tasks = std::fs::read_dir(format!("/proc/{}/task", server.child.id())).unwrap();
    let named = tasks
        .filter_map(Result::ok)
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.trim_end() == "fleetwire")
        })
        .count();
    assert!(named > 40, "{named} threads named fleetwire");
    let (code, _) = server.terminate();
    assert_eq!(code, Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_webhook_ca_file_that_is_missing_or_not_pem_stops_start_up_naming_the_key() {
    let dir = temp_dir("bad-ca-file");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("fleetwire.toml");
    let missing = dir.join("no-such-ca.pem");
    std::fs::write(
        &file,
        format!(
            "[webhooks]\nca_file = {:?}\n",
            missing.display().to_string()
        ),
    )
    .unwrap();
    let (code, stderr) = run_to_failure(command(&dir).arg("--config").arg(&file));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("webhooks.ca_file"), "{stderr}");
    let not_pem = dir.join("not-a-ca.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    std::fs::write(
        &file,
        format!(
            "[webhooks]\nca_file = {:?}\n",
            not_pem.display().to_string()
        ),
    )
    .unwrap();
    let (code, stderr) = run_to_failure(command(&dir).arg("--config").arg(&file));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("webhooks.ca_file") && stderr.contains("no certificate"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn layers_apply_in_order_file_then_environment_then_flags() {
    let dir = temp_dir("layers");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("fleetwire.toml");
    // The file asks for an address the environment overrides with garbage, which the
    // flag (from `command`) overrides again: start-up succeeds only if flags win.
    std::fs::write(
        &file,
        "allow_anonymous = true\n[mqtt]\naddr = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let mut command = command(&dir);
    command
        .arg("--config")
        .arg(&file)
        .env("FLEETWIRE_MQTT__ADDR", "not-an-address");
    let server = start(command);
    assert_ne!(server.mqtt_addr, "127.0.0.1:1");
    let (code, output) = server.terminate();
    assert_eq!(code, Some(0));
    assert!(
        output.contains("anonymous access is enabled"),
        "the file's allow_anonymous applies: {output}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_config_file_is_an_error() {
    let dir = temp_dir("missing-file");
    let (code, stderr) =
        run_to_failure(command(&dir).args(["--config", "/nonexistent/fleetwire.toml"]));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("/nonexistent/fleetwire.toml"), "{stderr}");
}

/// GET with the admin token; the body as JSON (panics on a non-200 answer).
fn api_get(addr: &str, path: &str, token: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {response}");
    serde_json::from_str(body).unwrap_or_else(|error| panic!("{path}: {error}: {body}"))
}

#[test]
fn demo_runs_registered_devices_that_log_in_send_telemetry_and_are_watched_by_rules() {
    let dir = temp_dir("demo");
    let mut command = subcommand("demo", &dir);
    command.args(["--devices", "5"]);
    let server = start(command);
    let token = std::fs::read_to_string(dir.join("admin.token")).unwrap();
    let token = token.trim();

    // The devices log in with their own credentials, so presence knows them.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let overview = api_get(&server.http_addr, "/api/v1/overview", token);
        if overview["devices"]["online"] == 5 {
            assert_eq!(overview["devices"]["total"], 5);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "devices not online: {overview}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let devices = api_get(&server.http_addr, "/api/v1/devices?type=room-sensor", token);
    let ids: Vec<&str> = devices["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|device| device["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "demo-0001",
            "demo-0002",
            "demo-0003",
            "demo-0004",
            "demo-0005"
        ]
    );
    assert_eq!(devices["items"][0]["labels"]["site"], "lyon");

    // Telemetry arrives in the store, field by field.
    loop {
        let latest = api_get(
            &server.http_addr,
            "/api/v1/devices/demo-0003/telemetry/latest",
            token,
        );
        let fields = latest.as_object().unwrap();
        if ["temperature", "humidity", "battery", "door_open"]
            .iter()
            .all(|field| fields.contains_key(*field))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no telemetry: {latest}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The default rules watch the fleet, and the dashboard is served.
    let rules = api_get(&server.http_addr, "/api/v1/rules", token);
    let rule_ids: Vec<&str> = rules["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| rule["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        rule_ids,
        ["battery-low", "door-left-open", "humid", "overheat"]
    );
    let index = http_get(&server.http_addr, "/");
    assert!(index.starts_with("HTTP/1.1 200"), "{index}");
    assert!(index.contains("text/html"), "{index}");

    let (code, output) = server.terminate();
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("Dashboard: http://127.0.0.1:"), "{output}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn rules_of_the_config_file_are_created_and_replaced_at_start() {
    let dir = temp_dir("config-rules");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("fleetwire.toml");
    let token = "a-token-for-config-rules";
    let rule = |threshold: u32| {
        format!(
            "[[rules]]\nid = \"overheat\"\nname = \"Overheating\"\n\
             condition = \"temperature > {threshold}\"\nfor = \"10s\"\nseverity = \"high\"\n\
             [rules.match]\ntype = \"thermostat\"\n\
             [[rules.actions]]\ntype = \"alarm\"\n"
        )
    };
    let run = |config: &str| {
        std::fs::write(&file, config).unwrap();
        let mut command = command(&dir);
        command
            .arg("--config")
            .arg(&file)
            .env("FLEETWIRE_ADMIN_TOKEN", token);
        let server = start(command);
        let stored = api_get(&server.http_addr, "/api/v1/rules/overheat", token);
        let listed = api_get(&server.http_addr, "/api/v1/rules", token);
        let (code, output) = server.terminate();
        assert_eq!(code, Some(0), "{output}");
        (stored, listed)
    };

    let (stored, _) = run(&rule(30));
    assert_eq!(stored["name"], "Overheating");
    assert_eq!(stored["condition"], "temperature > 30");
    assert_eq!(stored["severity"], "high");
    assert_eq!(stored["match"]["type"], "thermostat");

    // The next start replaces the rule of the same id rather than adding another.
    let (stored, listed) = run(&rule(35));
    assert_eq!(stored["condition"], "temperature > 35");
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a page of rules: {listed}"))
        .iter()
        .filter_map(|rule| rule["id"].as_str())
        .collect();
    assert_eq!(ids, ["overheat"]);

    // A rule that cannot be stored stops start-up, naming the rule; the stored one stays.
    std::fs::write(&file, rule(35).replace("temperature > 35", "temperature >")).unwrap();
    let (code, stderr) = run_to_failure(
        command(&dir)
            .arg("--config")
            .arg(&file)
            .env("FLEETWIRE_ADMIN_TOKEN", token),
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("rules[0]") && stderr.contains("overheat"),
        "{stderr}"
    );
    assert!(stderr.contains("condition"), "{stderr}");
    // Checked before anything starts: nothing listened.
    assert!(!stderr.contains("listening"), "{stderr}");

    // A rule without an id is refused before anything starts.
    std::fs::write(&file, rule(35).replace("id = \"overheat\"\n", "")).unwrap();
    let (code, stderr) = run_to_failure(command(&dir).arg("--config").arg(&file));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("rules[0]") && stderr.contains("id: required"),
        "{stderr}"
    );

    let (stored, _) = run(&rule(35));
    assert_eq!(stored["condition"], "temperature > 35");
    std::fs::remove_dir_all(&dir).unwrap();
}
