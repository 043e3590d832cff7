//! The REST API over real HTTP: a node started by the composition root (as `fleetwire
//! serve` starts it) on loopback, over a real SQLite registry in a temporary directory
//! and a real broker, driven by a real HTTP client (ureq) and, for disconnections, a real
//! MQTT client.

// Test helpers fail loudly on purpose.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fleetwire_model::DeviceId;
use fleetwire_platform::Platform;
use serde_json::{Value, json};
use ureq::http;

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A running node: its addresses, and handles on what it serves.
struct Server {
    addr: SocketAddr,
    mqtt_addr: SocketAddr,
    platform: Platform,
    /// The node; it runs as long as the runtime, and goes with it.
    _node: fleetwire::Running,
    runtime: tokio::runtime::Runtime,
    agent: ureq::Agent,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A response, read whole.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {:?}", self.text))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }

    /// Checks this is a problem+json answer with `status`, and returns its detail.
    fn problem(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let body = self.json();
        assert_eq!(body["status"], status, "{body}");
        assert!(
            body["type"]
                .as_str()
                .unwrap()
                .starts_with("urn:fleetwire:problem:"),
            "{body}"
        );
        assert!(!body["title"].as_str().unwrap().is_empty(), "{body}");
        body["detail"].as_str().unwrap().to_owned()
    }
}

fn start() -> Server {
    static SERVERS: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "fleetwire-api-test-{}-{}",
        std::process::id(),
        SERVERS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The node as `fleetwire serve` starts it (the composition root), on loopback.
    let settings = fleetwire::Settings::local(&dir, ADMIN_TOKEN).unwrap();
    let node = runtime.block_on(fleetwire::App::start(settings)).unwrap();
    // A fresh connection per request: a pooled one the server has just closed made a
    // request fail now and then with "peer disconnected" (seen once in CI), which says
    // nothing about the route under test.
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    Server {
        addr: node.http_addr(),
        mqtt_addr: node.mqtt_addr(),
        platform: node.platform().clone(),
        _node: node,
        runtime,
        agent,
        dir,
    }
}

impl Server {
    /// Sends a request; `body` is sent as JSON unless `content_type` says otherwise.
    fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Option<&str>,
    ) -> Answer {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let mut response = match body {
            Some(body) => self
                .agent
                .run(request.body(body.to_owned()).unwrap())
                .unwrap(),
            None => self.agent.run(request.body(()).unwrap()).unwrap(),
        };
        let text = response.body_mut().read_to_string().unwrap();
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            text,
        }
    }

    fn get(&self, path: &str, token: &str) -> Answer {
        self.send("GET", path, Some(token), None, None)
    }

    fn delete(&self, path: &str, token: &str) -> Answer {
        self.send("DELETE", path, Some(token), None, None)
    }

    fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.send(
            "POST",
            path,
            Some(token),
            Some("application/json"),
            Some(&body.to_string()),
        )
    }

    fn patch(&self, path: &str, token: &str, body: Value) -> Answer {
        self.send(
            "PATCH",
            path,
            Some(token),
            Some("application/json"),
            Some(&body.to_string()),
        )
    }

    fn create_device(&self, body: Value) -> Value {
        let answer = self.post("/api/v1/devices", ADMIN_TOKEN, body);
        assert_eq!(answer.status, 201, "{answer:?}");
        answer.json()
    }

    /// Creates an API token with `role` and returns its secret.
    fn token(&self, name: &str, role: &str) -> String {
        let answer = self.post(
            "/api/v1/tokens",
            ADMIN_TOKEN,
            json!({"name": name, "role": role}),
        );
        assert_eq!(answer.status, 201, "{answer:?}");
        answer.json()["token"].as_str().unwrap().to_owned()
    }

    /// Every device of a listing, following `next_cursor`; also returns the page sizes.
    fn list_all(&self, query: &str, limit: u32) -> (Vec<String>, Vec<usize>) {
        let mut ids = Vec::new();
        let mut pages = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/devices?limit={limit}{query}");
            if let Some(cursor) = &cursor {
                path.push_str("&cursor=");
                path.push_str(
                    &form_urlencoded::byte_serialize(cursor.as_bytes()).collect::<String>(),
                );
            }
            let answer = self.get(&path, ADMIN_TOKEN);
            assert_eq!(answer.status, 200, "{answer:?}");
            let page = answer.json();
            let items = page["items"].as_array().unwrap();
            pages.push(items.len());
            ids.extend(
                items
                    .iter()
                    .map(|item| item["id"].as_str().unwrap().to_owned()),
            );
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => {
                    assert!(page["next_cursor"].is_null(), "{page}");
                    return (ids, pages);
                }
            }
        }
    }
}

fn is_rfc3339_millis(text: &str) -> bool {
    // 2024-05-01T12:34:56.789Z
    let bytes = text.as_bytes();
    bytes.len() == 24
        && bytes.iter().enumerate().all(|(index, &byte)| match index {
            4 | 7 => byte == b'-',
            10 => byte == b'T',
            13 | 16 => byte == b':',
            19 => byte == b'.',
            23 => byte == b'Z',
            _ => byte.is_ascii_digit(),
        })
}

#[test]
fn a_device_is_created_shown_changed_and_deleted() {
    let server = start();
    let answer = server.post(
        "/api/v1/devices",
        ADMIN_TOKEN,
        json!({"id": "boiler-1", "name": "Boiler", "type": "sensor", "labels": {"site": "lyon"}}),
    );
    assert_eq!(answer.status, 201, "{answer:?}");
    assert_eq!(answer.header("location"), Some("/api/v1/devices/boiler-1"));
    let device = answer.json();
    assert_eq!(device["id"], "boiler-1");
    assert_eq!(device["name"], "Boiler");
    assert_eq!(device["type"], "sensor");
    assert_eq!(device["labels"], json!({"site": "lyon"}));
    assert!(
        is_rfc3339_millis(device["created_at"].as_str().unwrap()),
        "{device}"
    );
    assert_eq!(device["last_seen"], Value::Null);
    assert_eq!(device["online"], false);
    assert_eq!(device["attributes"], json!({}));
    assert_eq!(device["has_credentials"], false);

    let shown = server.get("/api/v1/devices/boiler-1", ADMIN_TOKEN);
    assert_eq!(shown.status, 200);
    assert_eq!(shown.json(), device);

    let changed = server.patch(
        "/api/v1/devices/boiler-1",
        ADMIN_TOKEN,
        json!({"name": "Boiler room", "labels": {"site": "paris", "floor": "2"}}),
    );
    assert_eq!(changed.status, 200, "{changed:?}");
    let changed = changed.json();
    assert_eq!(changed["name"], "Boiler room");
    assert_eq!(changed["type"], "sensor", "absent fields are kept");
    assert_eq!(changed["labels"], json!({"site": "paris", "floor": "2"}));
    assert_eq!(
        server.get("/api/v1/devices/boiler-1", ADMIN_TOKEN).json(),
        changed
    );

    let deleted = server.delete("/api/v1/devices/boiler-1", ADMIN_TOKEN);
    assert_eq!(deleted.status, 204, "{deleted:?}");
    assert_eq!(deleted.text, "");
    server
        .get("/api/v1/devices/boiler-1", ADMIN_TOKEN)
        .problem(404);
    server
        .delete("/api/v1/devices/boiler-1", ADMIN_TOKEN)
        .problem(404);
}

#[test]
fn a_device_without_an_id_gets_a_generated_one() {
    let server = start();
    let first = server.create_device(json!({}));
    let second = server.create_device(json!({"name": "second"}));
    let id = first["id"].as_str().unwrap();
    assert!(DeviceId::new(id).is_ok(), "{first}");
    assert_ne!(first["id"], second["id"]);
    assert_eq!(first["name"], "");
    assert_eq!(first["type"], "");
    assert_eq!(first["labels"], json!({}));
    assert_eq!(
        server
            .get(&format!("/api/v1/devices/{id}"), ADMIN_TOKEN)
            .json()["id"],
        id
    );
}

#[test]
fn listing_follows_cursors_across_pages_and_filters_by_type_and_labels() {
    let server = start();
    for index in 0..25 {
        let device_type = if index % 2 == 0 { "sensor" } else { "valve" };
        let site = if index % 5 == 0 { "lyon" } else { "paris" };
        server.create_device(json!({
            "id": format!("dev-{index:02}"),
            "type": device_type,
            "labels": {"site": site, "rack": (index % 3).to_string()},
        }));
    }

    let (ids, pages) = server.list_all("", 10);
    assert_eq!(pages, [10, 10, 5]);
    let expected: Vec<String> = (0..25).map(|index| format!("dev-{index:02}")).collect();
    assert_eq!(ids, expected, "every device once, ordered by id");

    let (sensors, _) = server.list_all("&type=sensor", 4);
    let expected: Vec<String> = (0..25)
        .step_by(2)
        .map(|index| format!("dev-{index:02}"))
        .collect();
    assert_eq!(sensors, expected);

    let (in_lyon, _) = server.list_all("&label=site:lyon", 2);
    assert_eq!(in_lyon, ["dev-00", "dev-05", "dev-10", "dev-15", "dev-20"]);

    let (lyon_rack_0, _) = server.list_all("&label=site:lyon&label=rack:0", 100);
    assert_eq!(lyon_rack_0, ["dev-00", "dev-15"]);

    let (lyon_sensors_rack_0, _) =
        server.list_all("&label=site:lyon&label=rack:0&type=sensor", 100);
    assert_eq!(lyon_sensors_rack_0, ["dev-00"]);

    let (nothing, pages) = server.list_all("&type=pump", 10);
    assert!(nothing.is_empty());
    assert_eq!(pages, [0]);

    let default_page = server.get("/api/v1/devices", ADMIN_TOKEN).json();
    assert_eq!(default_page["items"].as_array().unwrap().len(), 25);
    assert!(default_page["next_cursor"].is_null());
}

#[test]
fn bad_listing_queries_are_bad_requests() {
    let server = start();
    for (query, expected) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("label=site", "key:value"),
        ("labels=site:lyon", "unknown query parameter \"labels\""),
        ("cursor=not-one-of-ours", "cursor"),
    ] {
        let detail = server
            .get(&format!("/api/v1/devices?{query}"), ADMIN_TOKEN)
            .problem(400);
        assert!(detail.contains(expected), "{query}: {detail}");
    }
}

#[test]
fn credentials_are_shown_once_and_replaced_on_reissue() {
    let server = start();
    server.create_device(json!({"id": "meter-7"}));
    let first = server.send(
        "POST",
        "/api/v1/devices/meter-7/credentials",
        Some(ADMIN_TOKEN),
        None,
        None,
    );
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(first.header("cache-control"), Some("no-store"));
    let first = first.json();
    assert_eq!(first["username"], "meter-7");
    let first_password = first["password"].as_str().unwrap().to_owned();
    assert!(first_password.len() >= 16, "{first}");

    let device = server.get("/api/v1/devices/meter-7", ADMIN_TOKEN);
    assert_eq!(device.json()["has_credentials"], true);
    assert!(!device.text.contains(&first_password), "never shown again");

    // A JSON content type with an empty body is fine too (what most clients send).
    let second = server.send(
        "POST",
        "/api/v1/devices/meter-7/credentials",
        Some(ADMIN_TOKEN),
        Some("application/json"),
        None,
    );
    assert_eq!(second.status, 201, "{second:?}");
    let second_password = second.json()["password"].as_str().unwrap().to_owned();
    assert_ne!(first_password, second_password);

    let id = DeviceId::new("meter-7").unwrap();
    server.runtime.block_on(async {
        let platform = &server.platform;
        assert!(
            !platform
                .verify_device_secret(&id, first_password.as_bytes())
                .await
                .unwrap(),
            "the old secret is revoked"
        );
        assert!(
            platform
                .verify_device_secret(&id, second_password.as_bytes())
                .await
                .unwrap()
        );
    });

    server
        .send(
            "POST",
            "/api/v1/devices/nobody/credentials",
            Some(ADMIN_TOKEN),
            None,
            None,
        )
        .problem(404);
}

/// Connects as a device (MQTT 5.0) and returns the connection.
async fn connect_device(
    mqtt_addr: SocketAddr,
    device: &str,
    password: &str,
) -> fleetwire_client::Connection {
    let options = fleetwire_client::ConnectOptions {
        addr: mqtt_addr,
        client_id: device.to_owned(),
        version: fleetwire_mqtt_codec::ProtocolVersion::V5,
        username: Some(device.to_owned()),
        password: Some(password.to_owned().into()),
        ..fleetwire_client::ConnectOptions::default()
    };
    let (connection, connack) = fleetwire_client::Connection::connect(&options)
        .await
        .unwrap();
    assert_eq!(
        connack.code,
        fleetwire_mqtt_codec::ReasonCode::SUCCESS,
        "{connack:?}"
    );
    connection
}

/// Waits until the server closes the connection.
async fn closed(mut connection: fleetwire_client::Connection) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while connection.next_event().await.is_ok() {}
    })
    .await
    .expect("the server closes the connection");
}

#[test]
fn reissuing_credentials_or_deleting_a_device_disconnects_it() {
    let server = start();
    for id in ["rotated", "deleted"] {
        server.create_device(json!({"id": id}));
    }
    let password = |id: &str| {
        let answer = server.send(
            "POST",
            &format!("/api/v1/devices/{id}/credentials"),
            Some(ADMIN_TOKEN),
            None,
            None,
        );
        answer.json()["password"].as_str().unwrap().to_owned()
    };
    let rotated = server.runtime.block_on(connect_device(
        server.mqtt_addr,
        "rotated",
        &password("rotated"),
    ));
    let deleted = server.runtime.block_on(connect_device(
        server.mqtt_addr,
        "deleted",
        &password("deleted"),
    ));

    password("rotated");
    server.runtime.block_on(closed(rotated));

    assert_eq!(
        server.delete("/api/v1/devices/deleted", ADMIN_TOKEN).status,
        204
    );
    server.runtime.block_on(closed(deleted));
}

#[test]
fn requests_without_a_valid_token_are_unauthorized() {
    let server = start();
    let cases: [(&str, Option<&str>); 5] = [
        ("no header", None),
        ("unknown token", Some("Bearer not-a-token")),
        ("basic auth", Some("Basic YWRtaW46YWRtaW4=")),
        ("empty bearer", Some("Bearer ")),
        ("no scheme", Some(ADMIN_TOKEN)),
    ];
    for (case, authorization) in cases {
        for (method, path) in [
            ("GET", "/api/v1/devices"),
            ("GET", "/api/v1/devices/d1"),
            ("POST", "/api/v1/devices"),
            ("GET", "/api/v1/tokens"),
        ] {
            let mut request = http::Request::builder()
                .method(method)
                .uri(format!("http://{}{path}", server.addr));
            if let Some(authorization) = authorization {
                request = request.header("authorization", authorization);
            }
            let mut response = server.agent.run(request.body(()).unwrap()).unwrap();
            let answer = Answer {
                status: response.status().as_u16(),
                headers: response.headers().clone(),
                text: response.body_mut().read_to_string().unwrap(),
            };
            answer.problem(401);
            assert!(
                answer
                    .header("www-authenticate")
                    .unwrap()
                    .starts_with("Bearer"),
                "{case}: {answer:?}"
            );
        }
    }
    // Health, readiness, metrics and the document need no token.
    for path in ["/healthz", "/readyz", "/metrics", "/api/openapi.json"] {
        let answer = server.send("GET", path, None, None, None);
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
    }
}

#[test]
fn roles_limit_what_a_token_may_do() {
    let server = start();
    server.create_device(json!({"id": "d1"}));
    let viewer = server.token("dashboard", "viewer");
    let operator = server.token("provisioning", "operator");

    // Viewers read.
    assert_eq!(server.get("/api/v1/devices", &viewer).status, 200);
    assert_eq!(server.get("/api/v1/devices/d1", &viewer).status, 200);
    let detail = server
        .post("/api/v1/devices", &viewer, json!({"id": "d2"}))
        .problem(403);
    assert!(detail.contains("operator"), "{detail}");
    server
        .patch("/api/v1/devices/d1", &viewer, json!({"name": "x"}))
        .problem(403);
    server.delete("/api/v1/devices/d1", &viewer).problem(403);
    server
        .send(
            "POST",
            "/api/v1/devices/d1/credentials",
            Some(&viewer),
            None,
            None,
        )
        .problem(403);
    server.get("/api/v1/tokens", &viewer).problem(403);

    // Operators manage devices and credentials, not tokens.
    assert_eq!(
        server
            .post("/api/v1/devices", &operator, json!({"id": "d2"}))
            .status,
        201
    );
    assert_eq!(
        server
            .patch("/api/v1/devices/d2", &operator, json!({"name": "x"}))
            .status,
        200
    );
    assert_eq!(
        server
            .send(
                "POST",
                "/api/v1/devices/d2/credentials",
                Some(&operator),
                None,
                None
            )
            .status,
        201
    );
    assert_eq!(server.delete("/api/v1/devices/d2", &operator).status, 204);
    server.get("/api/v1/tokens", &operator).problem(403);
    let detail = server
        .post(
            "/api/v1/tokens",
            &operator,
            json!({"name": "mine", "role": "admin"}),
        )
        .problem(403);
    assert!(detail.contains("admin"), "{detail}");
    server
        .delete("/api/v1/tokens/anything", &operator)
        .problem(403);
}

#[test]
fn tokens_are_created_listed_and_revoked() {
    let server = start();
    let answer = server.post(
        "/api/v1/tokens",
        ADMIN_TOKEN,
        json!({"name": "grafana", "role": "viewer"}),
    );
    assert_eq!(answer.status, 201, "{answer:?}");
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    let created = answer.json();
    assert_eq!(created["name"], "grafana");
    assert_eq!(created["role"], "viewer");
    assert!(is_rfc3339_millis(created["created_at"].as_str().unwrap()));
    let secret = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(server.get("/api/v1/devices", &secret).status, 200);

    let listing = server.get("/api/v1/tokens", ADMIN_TOKEN);
    assert_eq!(listing.status, 200, "{listing:?}");
    assert!(!listing.text.contains(&secret), "secrets are never listed");
    assert!(
        !listing.text.contains(ADMIN_TOKEN),
        "secrets are never listed"
    );
    let listing = listing.json();
    assert!(listing["next_cursor"].is_null());
    let tokens = listing["items"].as_array().unwrap();
    let names: BTreeSet<&str> = tokens
        .iter()
        .map(|token| token["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, BTreeSet::from(["bootstrap", "grafana"]));
    let listed = tokens
        .iter()
        .find(|token| token["id"] == id.as_str())
        .unwrap();
    assert_eq!(
        listed,
        &json!({"id": id, "name": "grafana", "role": "viewer", "created_at": created["created_at"]})
    );

    let revoked = server.delete(&format!("/api/v1/tokens/{id}"), ADMIN_TOKEN);
    assert_eq!(revoked.status, 204, "{revoked:?}");
    server.get("/api/v1/devices", &secret).problem(401);
    server
        .delete(&format!("/api/v1/tokens/{id}"), ADMIN_TOKEN)
        .problem(404);
    let remaining = server.get("/api/v1/tokens", ADMIN_TOKEN).json();
    assert_eq!(remaining["items"].as_array().unwrap().len(), 1);

    let detail = server
        .post(
            "/api/v1/tokens",
            ADMIN_TOKEN,
            json!({"name": "root", "role": "root"}),
        )
        .problem(422);
    assert!(detail.contains("root"), "{detail}");
    server
        .post(
            "/api/v1/tokens",
            ADMIN_TOKEN,
            json!({"name": "", "role": "viewer"}),
        )
        .problem(422);
    let detail = server
        .post("/api/v1/tokens", ADMIN_TOKEN, json!({"role": "viewer"}))
        .problem(422);
    assert!(detail.contains("name"), "{detail}");
}

#[test]
fn errors_are_problem_json_with_the_right_status() {
    let server = start();
    server.create_device(json!({"id": "taken"}));

    // 400: a path id breaking the syntax, JSON that does not parse.
    let detail = server
        .get("/api/v1/devices/bad%20id", ADMIN_TOKEN)
        .problem(400);
    assert!(detail.contains("device id"), "{detail}");
    let long_id = "a".repeat(129);
    server
        .get(&format!("/api/v1/devices/{long_id}"), ADMIN_TOKEN)
        .problem(400);
    server
        .send(
            "POST",
            "/api/v1/devices",
            Some(ADMIN_TOKEN),
            Some("application/json"),
            Some("{\"id\": "),
        )
        .problem(400);

    // 404: unknown device, unknown route.
    let detail = server
        .get("/api/v1/devices/nobody", ADMIN_TOKEN)
        .problem(404);
    assert!(detail.contains("nobody"), "{detail}");
    let detail = server.get("/api/v1/nothing-here", ADMIN_TOKEN).problem(404);
    assert!(detail.contains("/api/v1/nothing-here"), "{detail}");
    server
        .send("GET", "/nowhere", None, None, None)
        .problem(404);

    // 405: a route without this method; the allowed ones are listed.
    let answer = server.send(
        "PUT",
        "/api/v1/devices/taken",
        Some(ADMIN_TOKEN),
        None,
        None,
    );
    answer.problem(405);
    let allow = answer.header("allow").unwrap_or_default();
    assert!(
        allow.contains("PATCH") && allow.contains("DELETE"),
        "{answer:?}"
    );
    server
        .send("DELETE", "/api/v1/devices", Some(ADMIN_TOKEN), None, None)
        .problem(405);
    server
        .send("POST", "/healthz", None, None, None)
        .problem(405);

    // 409: the id is taken.
    let detail = server
        .post("/api/v1/devices", ADMIN_TOKEN, json!({"id": "taken"}))
        .problem(409);
    assert!(detail.contains("taken"), "{detail}");

    // 413: more than 64 KiB.
    let huge = json!({"id": "big", "name": "x".repeat(70 * 1024)});
    let detail = server
        .post("/api/v1/devices", ADMIN_TOKEN, huge)
        .problem(413);
    assert!(detail.contains("65536"), "{detail}");

    // 415: not sent as JSON.
    for content_type in [None, Some("text/plain")] {
        let detail = server
            .send(
                "POST",
                "/api/v1/devices",
                Some(ADMIN_TOKEN),
                content_type,
                Some("{\"id\": \"plain\"}"),
            )
            .problem(415);
        assert!(detail.contains("application/json"), "{detail}");
    }

    // 422: unknown fields (named), wrong types, values breaking the rules.
    let detail = server
        .post(
            "/api/v1/devices",
            ADMIN_TOKEN,
            json!({"id": "d", "colour": "red"}),
        )
        .problem(422);
    assert!(detail.contains("colour"), "{detail}");
    let detail = server
        .patch(
            "/api/v1/devices/taken",
            ADMIN_TOKEN,
            json!({"id": "renamed"}),
        )
        .problem(422);
    assert!(detail.contains("`id`"), "{detail}");
    let detail = server
        .post("/api/v1/devices", ADMIN_TOKEN, json!({"labels": {"a": 1}}))
        .problem(422);
    assert!(detail.contains("labels"), "{detail}");
    let detail = server
        .post("/api/v1/devices", ADMIN_TOKEN, json!({"id": "no spaces"}))
        .problem(422);
    assert!(detail.contains("device id"), "{detail}");
    server
        .post(
            "/api/v1/devices",
            ADMIN_TOKEN,
            json!({"name": "n".repeat(257)}),
        )
        .problem(422);
    server
        .post(
            "/api/v1/devices",
            ADMIN_TOKEN,
            json!(["not", "an", "object"]),
        )
        .problem(422);
    server
        .patch(
            "/api/v1/devices/taken",
            ADMIN_TOKEN,
            json!({"labels": {"": "empty key"}}),
        )
        .problem(422);
}

#[test]
fn metrics_count_requests_by_route_template_and_status_class() {
    let server = start();
    server.create_device(json!({"id": "m1"}));
    for _ in 0..3 {
        assert_eq!(server.get("/api/v1/devices/m1", ADMIN_TOKEN).status, 200);
    }
    server.get("/api/v1/devices/m2", ADMIN_TOKEN).problem(404);
    server
        .send("GET", "/no/such/path", None, None, None)
        .problem(404);

    let metrics = server.send("GET", "/metrics", None, None, None);
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{metrics:?}"
    );
    let text = metrics.text;
    for expected in [
        "# TYPE fleetwire_mqtt_auth_failures_total counter\nfleetwire_mqtt_auth_failures_total 0\n",
        "# TYPE fleetwire_mqtt_clients_connected gauge\n",
        "# TYPE fleetwire_http_request_duration_seconds histogram\n",
        "fleetwire_http_requests_total{method=\"GET\",route=\"/api/v1/devices/{id}\",status=\"2xx\"} 3\n",
        "fleetwire_http_requests_total{method=\"GET\",route=\"/api/v1/devices/{id}\",status=\"4xx\"} 1\n",
        "fleetwire_http_requests_total{method=\"POST\",route=\"/api/v1/devices\",status=\"2xx\"} 1\n",
        "fleetwire_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"4xx\"} 1\n",
        "fleetwire_http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/v1/devices/{id}\",status=\"2xx\",le=\"+Inf\"} 3\n",
        "fleetwire_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/devices/{id}\",status=\"2xx\"} 3\n",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
}

/// Every route the router serves, as (method, path template).
const ROUTES: [(&str, &str); 34] = [
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/openapi.json"),
    ("get", "/api/v1/devices"),
    ("post", "/api/v1/devices"),
    ("get", "/api/v1/devices/{id}"),
    ("patch", "/api/v1/devices/{id}"),
    ("delete", "/api/v1/devices/{id}"),
    ("post", "/api/v1/devices/{id}/credentials"),
    ("get", "/api/v1/devices/{id}/certificates"),
    ("post", "/api/v1/devices/{id}/certificates"),
    ("delete", "/api/v1/devices/{id}/certificates/{fingerprint}"),
    ("get", "/api/v1/tokens"),
    ("post", "/api/v1/tokens"),
    ("delete", "/api/v1/tokens/{id}"),
    ("get", "/api/v1/devices/{id}/telemetry/latest"),
    ("get", "/api/v1/devices/{id}/telemetry"),
    ("post", "/api/v1/devices/{id}/telemetry"),
    ("post", "/api/v2/write"),
    ("get", "/api/v1/rules"),
    ("post", "/api/v1/rules"),
    ("get", "/api/v1/rules/{id}"),
    ("put", "/api/v1/rules/{id}"),
    ("delete", "/api/v1/rules/{id}"),
    ("get", "/api/v1/alarms"),
    ("get", "/api/v1/alarms/{id}"),
    ("post", "/api/v1/alarms/{id}/ack"),
    ("post", "/api/v1/alarms/{id}/clear"),
    ("get", "/api/v1/devices/{id}/commands"),
    ("post", "/api/v1/devices/{id}/commands"),
    ("get", "/api/v1/devices/{id}/commands/{cmd}"),
    ("get", "/api/v1/overview"),
    ("get", "/api/v1/stream"),
];

#[test]
fn the_openapi_document_describes_every_route() {
    let server = start();
    let answer = server.send("GET", "/api/openapi.json", None, None, None);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let document = answer.json();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(
        document,
        serde_json::to_value(fleetwire_api::openapi_document()).unwrap()
    );

    let documented: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    assert_eq!(documented, routes);

    // Each documented operation is served: not the unknown-route 404, not a 405.
    for (method, path) in &documented {
        let concrete = path.replace("{id}", "some-id");
        let answer = server.send(
            &method.to_uppercase(),
            &concrete,
            Some(ADMIN_TOKEN),
            Some("application/json"),
            (method != "get" && method != "delete").then_some("{}"),
        );
        assert_ne!(answer.status, 405, "{method} {path}: {answer:?}");
        assert!(
            !answer.text.contains("no route for"),
            "{method} {path}: {answer:?}"
        );
    }

    // Every API operation needs the bearer token and lists its problems.
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer", "description": document["components"]["securitySchemes"]["bearer"]["description"]})
    );
    for (method, path) in documented
        .iter()
        .filter(|(_, path)| path.starts_with("/api/v1/"))
    {
        let operation = &document["paths"][path][method];
        // A device may also write its own telemetry with its MQTT credentials.
        let security = if method == "post" && path == "/api/v1/devices/{id}/telemetry" {
            json!([{"bearer": []}, {"device": []}])
        } else {
            json!([{"bearer": []}])
        };
        assert_eq!(operation["security"], security, "{method} {path}");
        for status in ["401", "403", "500"] {
            assert!(
                operation["responses"][status].is_object(),
                "{method} {path} lacks {status}"
            );
        }
        assert!(operation["operationId"].is_string(), "{method} {path}");
    }
    let schemas: BTreeSet<&str> = document["components"]["schemas"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let expected = BTreeSet::from([
        "Alarm",
        "AlarmCounts",
        "AlarmPage",
        "Command",
        "CommandPage",
        "CreatedToken",
        "Credentials",
        "Device",
        "DeviceCounts",
        "DevicePage",
        "DevicePatch",
        "IngestError",
        "IngestRates",
        "LatestValue",
        "NewCommand",
        "NewDevice",
        "NewPinnedCertificate",
        "NewRule",
        "NewToken",
        "Overview",
        "PinnedCertificate",
        "PinnedCertificatePage",
        "Problem",
        "Role",
        "Rule",
        "RuleAction",
        "RuleMatch",
        "RulePage",
        "Series",
        "SeriesSet",
        "Token",
        "TokenPage",
        "Written",
    ]);
    assert_eq!(schemas, expected);
    assert_eq!(
        document["components"]["schemas"]["Device"]["properties"]["labels"]["additionalProperties"],
        json!({"type": "string"})
    );
    assert_eq!(
        document["components"]["responses"]["NotFound"]["content"]["application/problem+json"]["schema"]
            ["$ref"],
        "#/components/schemas/Problem"
    );
}

#[test]
fn the_stream_answers_plain_http_with_problems() {
    let server = start();

    // Without a token: 401, whatever else is wrong with the request.
    server
        .send("GET", "/api/v1/stream?kinds=nonsense", None, None, None)
        .problem(401);

    // A plain GET (no WebSocket handshake), as curl or an HTTP client sends it: 426,
    // naming the protocol to upgrade to.
    let answer = server.get("/api/v1/stream", ADMIN_TOKEN);
    let detail = answer.problem(426);
    assert!(detail.contains("WebSocket"), "{detail}");
    assert_eq!(answer.header("upgrade"), Some("websocket"), "{answer:?}");

    // A bad filter is named before the missing handshake.
    let detail = server
        .get("/api/v1/stream?kinds=telemetry,nonsense", ADMIN_TOKEN)
        .problem(400);
    assert!(detail.contains("nonsense"), "{detail}");
}

#[test]
fn listing_filters_are_checked_as_the_document_says() {
    let server = start();
    // Empty values are refused, as the document's patterns and lengths say.
    for (path, expected) in [
        ("/api/v1/alarms?device=", "device id"),
        ("/api/v1/alarms?rule=", "rule id"),
        ("/api/v1/devices?label=", "key:value"),
        ("/api/v1/devices?cursor=", "cursor"),
        ("/api/v1/rules?cursor=", "cursor"),
        ("/api/v1/devices?prefix=no%20spaces", "prefix"),
    ] {
        let detail = server.get(path, ADMIN_TOKEN).problem(400);
        assert!(detail.contains(expected), "{path}: {detail}");
    }
    // At most 64 label filters, counted as given (the document's maxItems).
    let labels: String = (0..65).map(|_| "&label=site:lyon").collect();
    let detail = server
        .get(&format!("/api/v1/devices?limit=1{labels}"), ADMIN_TOKEN)
        .problem(400);
    assert!(detail.contains("at most 64"), "{detail}");
    let labels: String = (0..64).map(|_| "&label=site:lyon").collect();
    let answer = server.get(&format!("/api/v1/devices?limit=1{labels}"), ADMIN_TOKEN);
    assert_eq!(answer.status, 200, "{answer:?}");
}

#[test]
fn a_rule_action_refuses_unknown_fields_whatever_its_type() {
    let server = start();
    for action in [
        json!({"type": "alarm", "colour": "red"}),
        json!({"type": "webhook", "url": "http://example.com/hook", "colour": "red"}),
    ] {
        let detail = server
            .post(
                "/api/v1/rules",
                ADMIN_TOKEN,
                json!({"name": "n", "condition": "t > 1", "actions": [action]}),
            )
            .problem(422);
        assert!(detail.contains("colour"), "{detail}");
    }
}

#[test]
fn the_openapi_document_states_what_the_server_checks() {
    let server = start();
    let document = server
        .send("GET", "/api/openapi.json", None, None, None)
        .json();
    let operation = |method: &str, path: &str| document["paths"][path][method].clone();
    let parameter = |method: &str, path: &str, name: &str| -> Value {
        operation(method, path)["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|parameter| parameter["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))
            .clone()
    };
    let plain_id = json!({
        "type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[A-Za-z0-9_.-]+$"
    });

    // Ids in paths and filters.
    for (method, path, name) in [
        ("get", "/api/v1/devices/{id}", "id"),
        ("get", "/api/v1/devices/{id}/commands/{cmd}", "cmd"),
        ("get", "/api/v1/rules/{id}", "id"),
        ("post", "/api/v1/alarms/{id}/ack", "id"),
        ("get", "/api/v1/alarms", "device"),
        ("get", "/api/v1/alarms", "rule"),
    ] {
        assert_eq!(
            parameter(method, path, name)["schema"],
            plain_id,
            "{method} {path} {name}"
        );
    }
    // Cursors: base64url, never empty.
    for path in [
        "/api/v1/devices",
        "/api/v1/rules",
        "/api/v1/alarms",
        "/api/v1/devices/{id}/commands",
    ] {
        let schema = &parameter("get", path, "cursor")["schema"];
        assert_eq!(schema["minLength"], 2, "{path}");
        assert!(
            schema["pattern"]
                .as_str()
                .unwrap()
                .starts_with("^(?:[A-Za-z0-9_-]{4})*"),
            "{path}: {schema}"
        );
    }
    // Label filters: `key:value`, at most 64.
    let labels = &parameter("get", "/api/v1/devices", "label")["schema"];
    assert_eq!(labels["items"]["pattern"], ":");
    assert_eq!(labels["maxItems"], 64);
    // Words.
    assert_eq!(
        parameter("get", "/api/v1/alarms", "status")["schema"]["enum"],
        json!(["active", "acknowledged", "cleared", "open"])
    );
    assert_eq!(
        parameter("post", "/api/v2/write", "precision")["schema"]["enum"],
        json!(["ns", "us", "ms", "s"])
    );

    let schemas = &document["components"]["schemas"];
    // A field's schema, given a description, is the one item of a `oneOf`; an optional
    // field has `null` beside it.
    let field = |schema: &str, name: &str| -> Value {
        schemas[schema]["properties"][name]["oneOf"]
            .as_array()
            .unwrap_or_else(|| panic!("{schema}.{name} is not a oneOf"))
            .iter()
            .find(|item| item["type"] != "null")
            .unwrap()
            .clone()
    };
    // A command's result is `null` until the device answers, then any JSON value.
    assert_eq!(field("Command", "result"), json!({}));
    // Token names: not the bootstrap token's.
    let token_name = field("NewToken", "name");
    assert!(
        token_name["pattern"]
            .as_str()
            .unwrap()
            .starts_with("^(?!bootstrap$)"),
        "{token_name}"
    );
    // Labels of a device: how many, sizes of keys and values.
    let device_labels = field("NewDevice", "labels");
    assert_eq!(device_labels["maxProperties"], 64, "{device_labels}");
    assert_eq!(
        device_labels["propertyNames"]["maxLength"], 64,
        "{device_labels}"
    );
    assert_eq!(
        device_labels["additionalProperties"]["maxLength"], 256,
        "{device_labels}"
    );
    // Rule actions refuse unknown fields, like every other body.
    for variant in schemas["RuleAction"]["oneOf"].as_array().unwrap() {
        assert_eq!(variant["additionalProperties"], false, "{variant}");
    }
    // Replacing a rule takes no id: the path names it.
    let replacement = &operation("put", "/api/v1/rules/{id}")["requestBody"]["content"]["application/json"]
        ["schema"];
    assert!(replacement["properties"]["id"].is_null(), "{replacement}");
    assert!(
        replacement["properties"]["condition"].is_object(),
        "{replacement}"
    );

    // Every answer the server gives is listed, problems included.
    for (method, path, status) in [
        ("get", "/api/v1/stream", "426"),
        ("get", "/api/v1/alarms/{id}", "400"),
        ("post", "/api/v1/rules", "415"),
        ("put", "/api/v1/rules/{id}", "415"),
        ("post", "/api/v1/devices/{id}/commands", "415"),
    ] {
        assert!(
            operation(method, path)["responses"][status].is_object(),
            "{method} {path} lacks {status}"
        );
    }

    // Operation ids are unique (code generators and schemathesis's links rely on it).
    let mut ids = BTreeSet::new();
    for item in document["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            let id = operation["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_owned()), "operationId {id} is used twice");
        }
    }
}

/// A self-signed certificate whose subject's common name is `common_name`, as PEM, and its
/// SHA-256 fingerprint as lowercase hex.
fn device_certificate(common_name: &str) -> (String, String) {
    use sha2::Digest as _;
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let certificate = params.self_signed(&key).unwrap();
    let fingerprint = sha2::Sha256::digest(certificate.der())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    (certificate.pem(), fingerprint)
}

#[test]
fn a_certificate_is_pinned_listed_and_unpinned() {
    let server = start();
    server.create_device(json!({"id": "meter-1"}));
    let path = "/api/v1/devices/meter-1/certificates";
    let listed = server.get(path, ADMIN_TOKEN);
    assert_eq!(listed.status, 200, "{listed:?}");
    assert_eq!(listed.json(), json!({"items": [], "next_cursor": null}));

    let (pem, fingerprint) = device_certificate("meter-1");
    let answer = server.post(path, ADMIN_TOKEN, json!({"pem": pem}));
    assert_eq!(answer.status, 201, "{answer:?}");
    let pinned = answer.json();
    assert_eq!(pinned["fingerprint"], fingerprint.as_str());
    assert_eq!(pinned["common_name"], "meter-1");
    assert!(
        is_rfc3339_millis(pinned["added_at"].as_str().unwrap()),
        "{pinned}"
    );
    let not_after = pinned["not_after"].as_str().unwrap();
    assert!(is_rfc3339_millis(not_after), "{pinned}");
    assert!(not_after > pinned["added_at"].as_str().unwrap(), "{pinned}");
    let keys: BTreeSet<&str> = pinned
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["fingerprint", "common_name", "not_after", "added_at"])
    );

    // Again: already pinned, 200 with the same record.
    let again = server.post(path, ADMIN_TOKEN, json!({"pem": pem}));
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.json(), pinned);
    assert_eq!(
        server.get(path, ADMIN_TOKEN).json(),
        json!({"items": [pinned], "next_cursor": null})
    );

    // Unpinned by its fingerprint in upper case with colons, as openssl prints it.
    let colons = fingerprint
        .as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).to_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    let answer = server.delete(&format!("{path}/{colons}"), ADMIN_TOKEN);
    assert_eq!(answer.status, 204, "{answer:?}");
    assert_eq!(server.get(path, ADMIN_TOKEN).json()["items"], json!([]));
    let detail = server
        .delete(&format!("{path}/{fingerprint}"), ADMIN_TOKEN)
        .problem(404);
    assert!(detail.contains(&fingerprint), "{detail}");
}

#[test]
fn a_certificate_that_cannot_be_pinned_is_a_bad_request() {
    let server = start();
    server.create_device(json!({"id": "meter-1"}));
    let path = "/api/v1/devices/meter-1/certificates";
    let (other_pem, _) = device_certificate("meter-2");
    let (pem, _) = device_certificate("meter-1");
    let cases = [
        ("hello".to_owned(), "not PEM"),
        (format!("{pem}{pem}"), "exactly one certificate"),
        (other_pem, "expected the common name \"meter-1\""),
    ];
    for (text, expected) in cases {
        let detail = server
            .post(path, ADMIN_TOKEN, json!({"pem": text}))
            .problem(400);
        assert!(detail.contains(expected), "{detail}");
    }
    // JSON of the wrong shape, as everywhere: 422.
    server
        .post(path, ADMIN_TOKEN, json!({"certificate": pem}))
        .problem(422);
    // A fingerprint that is not one.
    let detail = server
        .delete(&format!("{path}/not-a-fingerprint"), ADMIN_TOKEN)
        .problem(400);
    assert!(detail.contains("64 hex digits"), "{detail}");
    assert_eq!(server.get(path, ADMIN_TOKEN).json()["items"], json!([]));
}

#[test]
fn certificates_of_an_unknown_device_are_not_found() {
    let server = start();
    let path = "/api/v1/devices/ghost/certificates";
    let (pem, fingerprint) = device_certificate("ghost");
    for answer in [
        server.post(path, ADMIN_TOKEN, json!({"pem": pem})),
        server.get(path, ADMIN_TOKEN),
        server.delete(&format!("{path}/{fingerprint}"), ADMIN_TOKEN),
    ] {
        let detail = answer.problem(404);
        assert!(detail.contains("device \"ghost\""), "{detail}");
    }
}

#[test]
fn viewers_list_certificates_and_operators_pin_them() {
    let server = start();
    server.create_device(json!({"id": "meter-1"}));
    let viewer = server.token("dashboard", "viewer");
    let operator = server.token("installer", "operator");
    let path = "/api/v1/devices/meter-1/certificates";
    let (pem, fingerprint) = device_certificate("meter-1");

    server.post(path, &viewer, json!({"pem": pem})).problem(403);
    assert_eq!(
        server.post(path, &operator, json!({"pem": pem})).status,
        201
    );
    assert_eq!(
        server.get(path, &viewer).json()["items"][0]["fingerprint"],
        fingerprint.as_str()
    );
    let one = format!("{path}/{fingerprint}");
    server.delete(&one, &viewer).problem(403);
    assert_eq!(server.delete(&one, &operator).status, 204);
    server.get(path, "not-a-token").problem(401);
}

#[test]
fn pinning_or_unpinning_a_certificate_disconnects_the_device() {
    let server = start();
    server.create_device(json!({"id": "meter-1"}));
    let password = || {
        let answer = server.send(
            "POST",
            "/api/v1/devices/meter-1/credentials",
            Some(ADMIN_TOKEN),
            None,
            None,
        );
        answer.json()["password"].as_str().unwrap().to_owned()
    };
    let secret = password();
    let path = "/api/v1/devices/meter-1/certificates";
    let (pem, fingerprint) = device_certificate("meter-1");

    let connection = server
        .runtime
        .block_on(connect_device(server.mqtt_addr, "meter-1", &secret));
    assert_eq!(
        server.post(path, ADMIN_TOKEN, json!({"pem": pem})).status,
        201
    );
    server.runtime.block_on(closed(connection));

    let connection = server
        .runtime
        .block_on(connect_device(server.mqtt_addr, "meter-1", &secret));
    assert_eq!(
        server
            .delete(&format!("{path}/{fingerprint}"), ADMIN_TOKEN)
            .status,
        204
    );
    server.runtime.block_on(closed(connection));
}
