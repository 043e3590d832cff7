//! The line-protocol scenario against a small in-test HTTP server that checks what it
//! receives: well-formed lines, every point new (timestamps of each device only move
//! forward), gzip when asked, and a `/metrics` counter the report picks up.

// Helpers outside #[test] functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetwire_bench::{Counters, LineProtocolConfig, TimePrecision, line_protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the fake server saw, shared by its connection tasks.
#[derive(Default)]
struct Server {
    points: AtomicU64,
    /// Lines whose timestamp was not newer than the device's previous one, or malformed.
    bad_lines: AtomicU64,
    gzip_requests: AtomicU64,
    /// Newest timestamp of each device.
    newest: Mutex<HashMap<String, i64>>,
    /// Answer every write with this status instead of 204.
    refuse_with: Option<u16>,
}

async fn start(server: Arc<Server>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(socket, Arc::clone(&server)));
        }
    });
    addr
}

async fn serve(mut socket: TcpStream, server: Arc<Server>) {
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let head_end = loop {
            if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                break end + 4;
            }
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
        };
        let head = String::from_utf8(buffer[..head_end].to_vec()).unwrap();
        let length = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().unwrap())
            })
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
        }
        let body: Vec<u8> = buffer[head_end..head_end + length].to_vec();
        buffer.drain(..head_end + length);
        let answer: Vec<u8> = if head.starts_with("GET /metrics ") {
            let text = format!(
                "# TYPE fake_points_total counter\nfake_points_total {}\nfake_gauge 3\n",
                server.points.load(Ordering::Relaxed)
            );
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                text.len()
            )
            .into_bytes()
        } else if let Some(status) = server.refuse_with {
            let text = "{\"title\":\"Unauthorized\"}";
            format!(
                "HTTP/1.1 {status} Refused\r\nContent-Length: {}\r\n\r\n{text}",
                text.len()
            )
            .into_bytes()
        } else {
            assert!(head.starts_with("POST /api/v2/write?bucket=bench&precision=ms HTTP/1.1\r\n"));
            assert!(
                head.contains("\r\nAuthorization: Token secret\r\n"),
                "{head}"
            );
            let text = if head.contains("\r\nContent-Encoding: gzip\r\n") {
                server.gzip_requests.fetch_add(1, Ordering::Relaxed);
                let mut plain = String::new();
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_string(&mut plain)
                    .unwrap();
                plain
            } else {
                String::from_utf8(body).unwrap()
            };
            check_lines(&server, &text);
            b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()
        };
        if socket.write_all(&answer).await.is_err() {
            return;
        }
    }
}

fn check_lines(server: &Server, text: &str) {
    let mut newest = server.newest.lock().unwrap();
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let device = parts[0].strip_prefix("bench,device=");
        let timestamp = parts.get(2).and_then(|text| text.parse::<i64>().ok());
        let (Some(device), Some(timestamp), 3) = (device, timestamp, parts.len()) else {
            server.bad_lines.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let fields = parts[1].split(',').count();
        for field in parts[1].split(',') {
            let value = field.split_once('=').map(|(_, value)| value.parse::<f64>());
            if !matches!(value, Some(Ok(_))) {
                server.bad_lines.fetch_add(1, Ordering::Relaxed);
            }
        }
        let previous = newest.insert(device.to_owned(), timestamp);
        if previous.is_some_and(|previous| previous >= timestamp) {
            server.bad_lines.fetch_add(1, Ordering::Relaxed);
        }
        server.points.fetch_add(fields as u64, Ordering::Relaxed);
    }
}

fn config(addr: SocketAddr) -> LineProtocolConfig {
    LineProtocolConfig {
        url: format!("http://{addr}"),
        token: Some("secret".to_owned()),
        connections: 2,
        lines_per_request: 40,
        devices: 10,
        fields: 3,
        duration: Duration::from_millis(800),
        warmup: Duration::from_millis(100),
        precision: TimePrecision::Milliseconds,
        ..LineProtocolConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_point_is_new_and_counted_in_the_report() {
    let server = Arc::new(Server::default());
    let addr = start(Arc::clone(&server)).await;
    let counters = Arc::new(Counters::default());
    let report = line_protocol::run(&config(addr), &counters).await.unwrap();

    assert_eq!(server.bad_lines.load(Ordering::Relaxed), 0);
    assert_eq!(report.errors, 0, "{report:?}");
    assert!(report.requests > 0, "{report:?}");
    assert_eq!(report.points, report.requests * 120);
    assert!(report.points <= server.points.load(Ordering::Relaxed));
    assert_eq!(server.newest.lock().unwrap().len(), 10);
    let growth = report.server_counters["fake_points_total"];
    assert!(growth > 0.0, "{:?}", report.server_counters);
    assert!(!report.server_counters.contains_key("fake_gauge"));

    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert!(json["points_per_sec"].as_f64().unwrap() > 0.0, "{json}");
    for key in ["p50", "p99", "p999", "max"] {
        assert!(json["latency_us"][key].is_u64(), "missing latency_us.{key}");
    }
    assert!(json["cpu"]["percent"].is_number());
    assert!(report.to_string().contains("points/s"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bodies_at_a_fixed_rate() {
    let server = Arc::new(Server::default());
    let addr = start(Arc::clone(&server)).await;
    let counters = Arc::new(Counters::default());
    let config = LineProtocolConfig {
        is_gzip: true,
        // 120 points per request, 2 connections: 25 requests a second in all.
        rate: 3_000.0,
        ..config(addr)
    };
    let report = line_protocol::run(&config, &counters).await.unwrap();
    assert_eq!(server.bad_lines.load(Ordering::Relaxed), 0);
    assert_eq!(report.errors, 0);
    assert!(server.gzip_requests.load(Ordering::Relaxed) > 0);
    // Not a timing assertion: only that the rate limit holds it far below unlimited.
    assert!(report.requests <= 100, "{report:?}");
    assert!(report.body_bytes_per_sec > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_first_request_stops_the_run_with_the_answer() {
    let server = Arc::new(Server {
        refuse_with: Some(401),
        ..Server::default()
    });
    let addr = start(server).await;
    let counters = Arc::new(Counters::default());
    let error = line_protocol::run(&config(addr), &counters)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("HTTP 401"), "{error}");
    assert!(error.contains("Unauthorized"), "{error}");
}
