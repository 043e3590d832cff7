//! Admin subcommands (`fleetwire device ...`, `fleetwire token ...`): thin clients of the
//! HTTP API. They send one request per step, print a table (or the API's JSON with
//! `--json`) and turn problem answers into an error carrying their `detail`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};

/// Where the API is and how to log in; accepted before or after the subcommand.
#[derive(Debug, Args)]
pub(crate) struct ApiArgs {
    /// Base URL of the Fleetwire HTTP API.
    #[arg(
        long,
        global = true,
        env = "FLEETWIRE_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    url: String,
    /// API token [default: the data dir's admin.token].
    #[arg(
        long,
        global = true,
        env = "FLEETWIRE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// Data directory whose admin.token to use when no token is given, and whose
    /// development CA `device cert` signs with [default: ./fleetwire-data].
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

/// `fleetwire device ...`.
#[derive(Debug, Args)]
pub(crate) struct DeviceArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: DeviceAction,
}

/// `fleetwire device ...`: the API's subcommands, and `cert`, which needs no API.
#[derive(Debug, Subcommand)]
enum DeviceAction {
    #[command(flatten)]
    Api(DeviceCommand),
    /// Issue a TLS client certificate for a device (offline: no API needed).
    ///
    /// Signed by the development CA in DATA_DIR/tls/ (see `fleetwire cert init`); writes
    /// ID.pem and ID.key.
    Cert {
        /// Device id: the certificate's subject common name.
        id: String,
        /// Directory to write ID.pem and ID.key to [default: the current directory].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Days the certificate is valid.
        #[arg(long, value_name = "N", default_value_t = 365)]
        days: u32,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Register a device.
    Create {
        /// Device id (1-128 characters of A-Z a-z 0-9 _ . -) [default: generated].
        #[arg(long)]
        id: Option<String>,
        /// Human-readable name.
        #[arg(long)]
        name: Option<String>,
        /// Device type, e.g. sensor.
        #[arg(long = "type", value_name = "TYPE")]
        device_type: Option<String>,
        /// A label, as key=value; repeat for several.
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// List devices, ordered by id.
    List {
        /// Only devices of this type.
        #[arg(long = "type", value_name = "TYPE")]
        device_type: Option<String>,
        /// Only devices with this label (key=value); repeat for several (all must match).
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Devices per page (1-1000) [default: 100].
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Start after this cursor (printed when there are more devices).
        #[arg(long, conflicts_with = "all")]
        cursor: Option<String>,
        /// Follow the pages to the end.
        #[arg(long)]
        all: bool,
    },
    /// Show one device.
    Show {
        /// Device id.
        id: String,
    },
    /// Change a device's name, type or labels.
    Update {
        /// Device id.
        id: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// New type.
        #[arg(long = "type", value_name = "TYPE")]
        device_type: Option<String>,
        /// New labels (key=value), replacing all current ones; repeat for several.
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Remove every label.
        #[arg(long, conflicts_with = "labels")]
        clear_labels: bool,
    },
    /// Delete a device and its credentials (it is disconnected).
    Delete {
        /// Device id.
        id: String,
    },
    /// Issue new MQTT credentials for a device; the old ones stop working.
    Credentials {
        /// Device id.
        id: String,
    },
}

/// `fleetwire token ...`.
#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create an API token; its secret is printed once.
    Create {
        /// Who uses it (1-128 characters).
        #[arg(long)]
        name: String,
        /// What it may do.
        #[arg(long, value_enum)]
        role: RoleArg,
    },
    /// List the API tokens that are not revoked.
    List,
    /// Revoke an API token.
    Revoke {
        /// Token id (from `token list`).
        id: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoleArg {
    /// Everything, including API tokens.
    Admin,
    /// Read, and manage devices and their credentials.
    Operator,
    /// Read only.
    Viewer,
}

impl RoleArg {
    fn as_str(self) -> &'static str {
        match self {
            RoleArg::Admin => "admin",
            RoleArg::Operator => "operator",
            RoleArg::Viewer => "viewer",
        }
    }
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// Runs `fleetwire device ...`.
pub(crate) fn run_device(args: DeviceArgs) -> anyhow::Result<()> {
    let command = match args.command {
        DeviceAction::Api(command) => command,
        DeviceAction::Cert { id, out, days } => {
            return crate::cert::issue_device(&id, args.api.data_dir.as_deref(), out, days);
        }
    };
    let client = Client::new(&args.api)?;
    let json = args.api.json;
    match command {
        DeviceCommand::Create {
            id,
            name,
            device_type,
            labels,
        } => {
            let mut body = Map::new();
            insert_some(&mut body, "id", id);
            insert_some(&mut body, "name", name);
            insert_some(&mut body, "type", device_type);
            if !labels.is_empty() {
                body.insert("labels".to_owned(), labels_json(labels));
            }
            let device = client.send("POST", "/api/v1/devices", Some(&Value::Object(body)))?;
            print_device(&device, json);
        }
        DeviceCommand::List {
            device_type,
            labels,
            limit,
            cursor,
            all,
        } => list_devices(&client, device_type, &labels, limit, cursor, all, json)?,
        DeviceCommand::Show { id } => {
            let device = client.send("GET", &device_path(&id), None)?;
            print_device(&device, json);
        }
        DeviceCommand::Update {
            id,
            name,
            device_type,
            labels,
            clear_labels,
        } => {
            let mut body = Map::new();
            insert_some(&mut body, "name", name);
            insert_some(&mut body, "type", device_type);
            if !labels.is_empty() || clear_labels {
                body.insert("labels".to_owned(), labels_json(labels));
            }
            if body.is_empty() {
                bail!("nothing to change: give --name, --type, --label or --clear-labels");
            }
            let device = client.send("PATCH", &device_path(&id), Some(&Value::Object(body)))?;
            print_device(&device, json);
        }
        DeviceCommand::Delete { id } => {
            client.send("DELETE", &device_path(&id), None)?;
            if !json {
                println!("deleted device {id}");
            }
        }
        DeviceCommand::Credentials { id } => {
            let path = format!("{}/credentials", device_path(&id));
            let credentials = client.send("POST", &path, None)?;
            if json {
                println!("{credentials}");
            } else {
                println!(
                    "username: {}\npassword: {}\n\nThe password is shown only this once; the \
                     device's previous credentials no longer work.",
                    text(&credentials["username"]),
                    text(&credentials["password"])
                );
            }
        }
    }
    Ok(())
}

/// Runs `fleetwire token ...`.
pub(crate) fn run_token(args: TokenArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.api)?;
    let json = args.api.json;
    match args.command {
        TokenCommand::Create { name, role } => {
            let body = json!({"name": name, "role": role.as_str()});
            let token = client.send("POST", "/api/v1/tokens", Some(&body))?;
            if json {
                println!("{token}");
            } else {
                print_fields(&[
                    ("id", text(&token["id"])),
                    ("name", text(&token["name"])),
                    ("role", text(&token["role"])),
                    ("created", text(&token["created_at"])),
                    ("token", text(&token["token"])),
                ]);
                println!("\nThe token is shown only this once.");
            }
        }
        TokenCommand::List => {
            let page = client.send("GET", "/api/v1/tokens", None)?;
            if json {
                println!("{page}");
            } else {
                let rows = items(&page)
                    .iter()
                    .map(|token| {
                        vec![
                            text(&token["id"]),
                            text(&token["name"]),
                            text(&token["role"]),
                            text(&token["created_at"]),
                        ]
                    })
                    .collect::<Vec<_>>();
                print!("{}", table(&["ID", "NAME", "ROLE", "CREATED"], &rows));
            }
        }
        TokenCommand::Revoke { id } => {
            client.send(
                "DELETE",
                &format!("/api/v1/tokens/{}", encode_segment(&id)),
                None,
            )?;
            if !json {
                println!("revoked token {id}");
            }
        }
    }
    Ok(())
}

fn list_devices(
    client: &Client,
    device_type: Option<String>,
    labels: &[(String, String)],
    limit: Option<u32>,
    mut cursor: Option<String>,
    all: bool,
    json: bool,
) -> anyhow::Result<()> {
    let mut devices = Vec::new();
    loop {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(device_type) = &device_type {
            query.append_pair("type", device_type);
        }
        for (key, value) in labels {
            query.append_pair("label", &format!("{key}:{value}"));
        }
        if let Some(limit) = limit {
            query.append_pair("limit", &limit.to_string());
        }
        if let Some(cursor) = &cursor {
            query.append_pair("cursor", cursor);
        }
        let query = query.finish();
        let path = if query.is_empty() {
            "/api/v1/devices".to_owned()
        } else {
            format!("/api/v1/devices?{query}")
        };
        let mut page = client.send("GET", &path, None)?;
        if let Some(Value::Array(items)) = page.get_mut("items") {
            devices.append(items);
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if !all || cursor.is_none() {
            break;
        }
    }
    if json {
        println!("{}", json!({"items": devices, "next_cursor": cursor}));
        return Ok(());
    }
    let rows = devices
        .iter()
        .map(|device| {
            vec![
                text(&device["id"]),
                text(&device["name"]),
                text(&device["type"]),
                yes_no(&device["online"]),
                text(&device["last_seen"]),
                labels_text(&device["labels"]),
            ]
        })
        .collect::<Vec<_>>();
    print!(
        "{}",
        table(
            &["ID", "NAME", "TYPE", "ONLINE", "LAST SEEN", "LABELS"],
            &rows
        )
    );
    if let Some(cursor) = cursor {
        eprintln!("more devices: add --all, or --cursor {cursor}");
    }
    Ok(())
}

fn print_device(device: &Value, json: bool) {
    if json {
        println!("{device}");
        return;
    }
    let attributes = match &device["attributes"] {
        Value::Object(attributes) if !attributes.is_empty() => device["attributes"].to_string(),
        _ => "-".to_owned(),
    };
    print_fields(&[
        ("id", text(&device["id"])),
        ("name", text(&device["name"])),
        ("type", text(&device["type"])),
        ("labels", labels_text(&device["labels"])),
        ("online", yes_no(&device["online"])),
        ("last seen", text(&device["last_seen"])),
        ("created", text(&device["created_at"])),
        ("credentials", yes_no(&device["has_credentials"])),
        ("attributes", attributes),
    ]);
}

fn print_fields(fields: &[(&str, String)]) {
    let width = fields.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    for (name, value) in fields {
        println!("{:width$}  {value}", format!("{name}:"), width = width + 1);
    }
}

/// Columns separated by two spaces, each as wide as its widest cell.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, width) in cells.zip(&widths) {
            let _ = write!(text, "{cell:width$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// A JSON value for a table cell: strings unquoted, `-` for empty or null.
fn text(value: &Value) -> String {
    match value {
        Value::String(text) if text.is_empty() => "-".to_owned(),
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn yes_no(value: &Value) -> String {
    if value.as_bool() == Some(true) {
        "yes"
    } else {
        "no"
    }
    .to_owned()
}

fn labels_text(labels: &Value) -> String {
    match labels.as_object() {
        Some(labels) if !labels.is_empty() => labels
            .iter()
            .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
        _ => "-".to_owned(),
    }
}

fn items(page: &Value) -> &[Value] {
    page["items"].as_array().map_or(&[], Vec::as_slice)
}

fn insert_some(body: &mut Map<String, Value>, key: &str, value: Option<String>) {
    if let Some(value) = value {
        body.insert(key.to_owned(), Value::String(value));
    }
}

fn labels_json(labels: Vec<(String, String)>) -> Value {
    Value::Object(
        labels
            .into_iter()
            .map(|(key, value)| (key, Value::String(value)))
            .collect(),
    )
}

pub(crate) fn device_path(id: &str) -> String {
    format!("/api/v1/devices/{}", encode_segment(id))
}

/// Percent-encodes a path segment (device ids need none, but a typo must not change the
/// path: the server then answers that the id is invalid).
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The API at one base URL, with one token.
pub(crate) struct Client {
    agent: ureq::Agent,
    base: String,
    token: String,
}

impl Client {
    fn new(args: &ApiArgs) -> anyhow::Result<Client> {
        Client::connect(&args.url, args.token.clone(), args.data_dir.as_deref())
    }

    /// A client of the API at `url`, with `token` or else the data dir's admin token.
    pub(crate) fn connect(
        url: &str,
        token: Option<String>,
        data_dir: Option<&Path>,
    ) -> anyhow::Result<Client> {
        let token = match token {
            Some(token) => token,
            None => read_token_file(data_dir)?,
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Ok(Client {
            agent,
            base: url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// Sends a request and returns the JSON answer (`null` for 204), or an error with
    /// the problem's detail.
    pub(crate) fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", format!("Bearer {}", self.token))
            .header("accept", "application/json");
        let result = match body {
            Some(body) => self.agent.run(
                request
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .context("cannot build the request")?,
            ),
            None => self
                .agent
                .run(request.body(()).context("cannot build the request")?),
        };
        let mut response = result.with_context(|| {
            format!(
                "cannot reach the Fleetwire API at {} (is `fleetwire serve` running? set \
                 --url or FLEETWIRE_URL)",
                self.base
            )
        })?;
        let status = response.status();
        let text = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("cannot read the answer to {method} {url}"))?;
        if status.is_success() {
            if text.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text)
                .with_context(|| format!("the answer to {method} {url} is not JSON"));
        }
        let detail = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|problem| problem["detail"].as_str().map(str::to_owned))
            .unwrap_or_else(|| text.trim().to_owned());
        Err(ApiError {
            status: status.as_u16(),
            detail,
        }
        .into())
    }
}

/// An error answer of the API: its status and the problem's detail.
#[derive(Debug, thiserror::Error)]
#[error("{detail} (HTTP {status})")]
pub(crate) struct ApiError {
    pub(crate) status: u16,
    pub(crate) detail: String,
}

/// The admin token of the data dir, for running on the server's machine.
fn read_token_file(data_dir: Option<&Path>) -> anyhow::Result<String> {
    let path = data_dir
        .unwrap_or_else(|| Path::new(crate::config::DEFAULT_DATA_DIR))
        .join("admin.token");
    let token = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no API token: pass --token or set FLEETWIRE_TOKEN (cannot read {})",
            path.display()
        )
    })?;
    let token = token.trim();
    if token.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_trim_line_ends() {
        let rows = vec![
            vec!["sensor-1".to_owned(), "yes".to_owned()],
            vec!["d".to_owned(), "-".to_owned()],
        ];
        assert_eq!(
            table(&["ID", "ONLINE"], &rows),
            "ID        ONLINE\nsensor-1  yes\nd         -\n"
        );
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode_segment("sensor-1.a_b~"), "sensor-1.a_b~");
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn labels_are_key_equals_value() {
        assert_eq!(
            parse_label("site=lyon=2"),
            Ok(("site".to_owned(), "lyon=2".to_owned()))
        );
        assert!(parse_label("site").is_err());
        assert!(parse_label("=lyon").is_err());
    }
}
