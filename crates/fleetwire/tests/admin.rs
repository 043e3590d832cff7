//! The admin subcommands as a user runs them: the real binary against a real
//! `fleetwire serve`, tables by default, `--json` for scripts, problem details and a
//! non-zero exit code on errors.

// Test helpers fail loudly on purpose.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_fleetwire");

/// A running `fleetwire serve`, stopped when dropped.
struct Server {
    child: Child,
    url: String,
    mqtt_addr: String,
    data_dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn start(name: &str) -> Server {
    let data_dir =
        std::env::temp_dir().join(format!("fleetwire-admin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut child = Command::new(BINARY)
        .args(["--log-format", "json", "serve"])
        .args(["--mqtt-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data_dir)
        .env("RUST_LOG", "info")
        .env_remove("FLEETWIRE_ADMIN_TOKEN")
        .env_remove("FLEETWIRE_TOKEN")
        .env_remove("FLEETWIRE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fleetwire starts");
    let stderr = child.stderr.take().unwrap();
    let (sender, log) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // Keep draining after the address is found, so the server never blocks on
            // a full pipe.
            let _ = sender.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut http_addr, mut mqtt_addr) = (None, None);
    while http_addr.is_none() || mqtt_addr.is_none() {
        let line = log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the listening lines within 30 s");
        let Ok(entry) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let fields = &entry["fields"];
        if fields["message"] == "listening" {
            let addr = fields["addr"].as_str().map(str::to_owned);
            match fields["protocol"].as_str() {
                Some("http") => http_addr = addr,
                Some("mqtt") => mqtt_addr = addr,
                _ => {}
            }
        }
    }
    Server {
        child,
        url: format!("http://{}", http_addr.unwrap()),
        mqtt_addr: mqtt_addr.unwrap(),
        data_dir,
    }
}

impl Server {
    /// `fleetwire <args> --url URL --data-dir DIR`, with no token in the environment.
    fn admin(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BINARY);
        command
            .args(args)
            .arg("--url")
            .arg(&self.url)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env_remove("FLEETWIRE_TOKEN")
            .env_remove("FLEETWIRE_URL");
        command
    }

    /// Runs an admin command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        succeeded(self.admin(args).output().unwrap(), args)
    }

    /// Runs an admin command with `--json` that must succeed; returns its JSON.
    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let stdout = self.ok(&args);
        serde_json::from_str(stdout.trim()).unwrap_or_else(|error| panic!("{error}: {stdout}"))
    }
}

fn succeeded(output: Output, args: &[&str]) -> String {
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        output.status.success(),
        "{args:?} failed: {stdout}\n{stderr}"
    );
    stdout
}

/// Runs a command that must fail; returns its stderr.
fn failed(mut command: Command) -> String {
    let output = command.output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{command:?}: {stderr}");
    stderr
}

fn token_file(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn devices_are_managed_from_the_command_line() {
    let server = start("devices");

    let created = server.ok(&[
        "device",
        "create",
        "--id",
        "cli-1",
        "--name",
        "Boiler room",
        "--type",
        "sensor",
        "--label",
        "site=lyon",
        "--label",
        "floor=2",
    ]);
    assert!(created.contains("cli-1"), "{created}");
    assert!(created.contains("floor=2,site=lyon"), "{created}");
    let second = server.json(&["device", "create", "--id", "cli-2", "--type", "valve"]);
    assert_eq!(second["id"], "cli-2");
    assert_eq!(second["type"], "valve");
    let generated = server.json(&["device", "create"]);
    let generated_id = generated["id"].as_str().unwrap().to_owned();

    let table = server.ok(&["device", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID"), "{table}");
    assert!(lines[0].contains("LAST SEEN"), "{table}");
    assert_eq!(lines.len(), 4, "{table}");
    assert!(
        lines.iter().any(|line| line.starts_with("cli-1")
            && line.contains("Boiler room")
            && line.contains("sensor")),
        "{table}"
    );

    let sensors = server.json(&["device", "list", "--type", "sensor"]);
    assert_eq!(sensors["items"].as_array().unwrap().len(), 1);
    let in_lyon = server.json(&["device", "list", "--label", "site=lyon"]);
    assert_eq!(in_lyon["items"][0]["id"], "cli-1");
    let every = server.json(&["device", "list", "--limit", "1", "--all"]);
    assert_eq!(every["items"].as_array().unwrap().len(), 3);
    assert!(every["next_cursor"].is_null());

    let output = server
        .admin(&["device", "list", "--limit", "1"])
        .output()
        .unwrap();
    let first_page = succeeded(output.clone(), &["device", "list"]);
    assert_eq!(first_page.lines().count(), 2, "{first_page}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("--cursor"), "{stderr}");

    let shown = server.ok(&["device", "show", "cli-1"]);
    assert!(shown.contains("Boiler room"), "{shown}");
    assert!(shown.contains("credentials:"), "{shown}");
    let updated = server.json(&[
        "device",
        "update",
        "cli-1",
        "--name",
        "Attic",
        "--clear-labels",
    ]);
    assert_eq!(updated["name"], "Attic");
    assert_eq!(updated["labels"], serde_json::json!({}));
    assert_eq!(updated["type"], "sensor");

    let credentials = server.ok(&["device", "credentials", "cli-1"]);
    assert!(credentials.contains("username: cli-1"), "{credentials}");
    let password = |text: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix("password: "))
            .unwrap()
            .to_owned()
    };
    let first = password(&credentials);
    let again = server.json(&["device", "credentials", "cli-1"]);
    assert_eq!(again["username"], "cli-1");
    assert_ne!(again["password"].as_str().unwrap(), first);

    let deleted = server.ok(&["device", "delete", &generated_id]);
    assert!(deleted.contains(&generated_id), "{deleted}");
    let stderr = failed(server.admin(&["device", "show", &generated_id]));
    assert!(
        stderr.contains("not found") && stderr.contains("404"),
        "{stderr}"
    );
    let stderr = failed(server.admin(&["device", "create", "--id", "cli-1"]));
    assert!(stderr.contains("already exists"), "{stderr}");
    let stderr = failed(server.admin(&["device", "show", "no spaces"]));
    assert!(stderr.contains("device id"), "{stderr}");
}

#[test]
fn tokens_are_managed_from_the_command_line() {
    let server = start("tokens");
    let created = server.json(&["token", "create", "--name", "dashboard", "--role", "viewer"]);
    assert_eq!(created["role"], "viewer");
    let viewer = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();

    let table = server.ok(&["token", "list"]);
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains("dashboard") && table.contains("bootstrap"),
        "{table}"
    );
    assert!(!table.contains(&viewer), "{table}");

    // A viewer token from the environment reads, and may not write.
    let mut list = server.admin(&["device", "list"]);
    list.env("FLEETWIRE_TOKEN", &viewer);
    succeeded(list.output().unwrap(), &["device", "list"]);
    let mut create = server.admin(&["device", "create"]);
    create.env("FLEETWIRE_TOKEN", &viewer);
    let stderr = failed(create);
    assert!(
        stderr.contains("operator") && stderr.contains("403"),
        "{stderr}"
    );

    let revoked = server.ok(&["token", "revoke", &id]);
    assert!(revoked.contains(&id), "{revoked}");
    let mut list = server.admin(&["device", "list", "--token", &viewer]);
    list.env_remove("FLEETWIRE_TOKEN");
    let stderr = failed(list);
    assert!(
        stderr.contains("revoked") && stderr.contains("401"),
        "{stderr}"
    );

    // The data dir's admin token is the default; a wrong one is refused.
    assert!(!token_file(&server.data_dir).is_empty());
    let stderr = failed(server.admin(&["token", "list", "--token", "wrong"]));
    assert!(stderr.contains("401"), "{stderr}");
}

#[test]
fn admin_commands_explain_what_is_missing() {
    let missing_dir =
        std::env::temp_dir().join(format!("fleetwire-admin-none-{}", std::process::id()));
    let mut command = Command::new(BINARY);
    command
        .args(["device", "list", "--url", "http://127.0.0.1:9"])
        .arg("--data-dir")
        .arg(&missing_dir)
        .env_remove("FLEETWIRE_TOKEN");
    let stderr = failed(command);
    assert!(stderr.contains("FLEETWIRE_TOKEN"), "{stderr}");

    let mut command = Command::new(BINARY);
    command
        .args([
            "device",
            "list",
            "--url",
            "http://127.0.0.1:9",
            "--token",
            "t",
        ])
        .env_remove("FLEETWIRE_URL");
    let stderr = failed(command);
    assert!(
        stderr.contains("cannot reach the Fleetwire API"),
        "{stderr}"
    );
}

#[test]
fn sim_registers_its_devices_and_logs_them_in() {
    let server = start("sim");
    let mut command = Command::new(BINARY);
    command
        .args([
            "sim",
            "--create-credentials",
            "--devices",
            "3",
            "--duration",
            "2",
        ])
        .args(["--qos", "1", "--ramp-up", "0.2", "--json"])
        .args(["--target", &server.mqtt_addr, "--api-url", &server.url])
        .arg("--data-dir")
        .arg(&server.data_dir)
        .env_remove("FLEETWIRE_TOKEN")
        .env_remove("FLEETWIRE_URL");
    let stdout = succeeded(command.output().unwrap(), &["sim"]);
    let report: Value = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    assert!(report["acknowledged"].as_u64().unwrap() >= 3, "{report}");
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");

    let page = server.json(&["device", "list", "--type", "simulated"]);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{page}");
    for device in items {
        assert!(
            device["id"].as_str().unwrap().starts_with("sim-"),
            "{device}"
        );
        assert!(device["has_credentials"].as_bool().unwrap(), "{device}");
        assert!(!device["last_seen"].is_null(), "{device}");
    }
}
