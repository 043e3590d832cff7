//! Webhook delivery: POST a JSON document to a URL, with a timeout, retries with
//! exponential backoff, and a circuit breaker per URL. Never in the way of ingest: each
//! URL has a bounded queue worked by its own thread; when it is full, new deliveries are
//! dropped and counted.
//!
//! The circuit breaker: after [`WebhookConfig::failures_to_open`] failed deliveries in a
//! row (each after its retries), the URL's circuit opens and deliveries fail at once for
//! [`WebhookConfig::open_for`]; then one delivery is tried (half open): success closes
//! the circuit, failure opens it again.
//!
//! A blocking client on threads (ureq) rather than an async one: webhooks are few, and
//! this keeps a second HTTP client stack out of the build.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How webhooks are delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// Time allowed for one attempt, connection included.
    pub timeout: Duration,
    /// Attempts per delivery (the first one included).
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each further one.
    pub first_backoff: Duration,
    /// Deliveries failed in a row that open a URL's circuit.
    pub failures_to_open: u32,
    /// How long an open circuit refuses deliveries before trying one.
    pub open_for: Duration,
    /// Deliveries waiting per URL; more are dropped.
    pub queue: usize,
    /// Certificates `https://` webhooks trust.
    pub roots: WebhookRoots,
}

/// The root certificates `https://` webhook receivers are checked against.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum WebhookRoots {
    /// Mozilla's root certificates, built in (webpki-roots).
    #[default]
    WebPki,
    /// Exactly these certificates (DER), for receivers behind an internal CA.
    Custom(Arc<Vec<Vec<u8>>>),
}

impl WebhookRoots {
    /// The certificates of a PEM bundle (other PEM sections, such as keys, are ignored);
    /// an error when the text is not PEM or holds no certificate.
    pub fn from_pem(pem: &[u8]) -> Result<WebhookRoots, String> {
        let mut certificates = Vec::new();
        for item in ureq::tls::parse_pem(pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(certificate)) => {
                    certificates.push(certificate.der().to_vec());
                }
                Ok(_) => {}
                Err(error) => return Err(format!("not a PEM certificate bundle: {error}")),
            }
        }
        if certificates.is_empty() {
            return Err("no certificate in the PEM bundle".to_owned());
        }
        Ok(WebhookRoots::Custom(Arc::new(certificates)))
    }

    fn tls_config(&self) -> ureq::tls::TlsConfig {
        let builder = ureq::tls::TlsConfig::builder();
        match self {
            WebhookRoots::WebPki => builder.root_certs(ureq::tls::RootCerts::WebPki),
            WebhookRoots::Custom(certificates) => {
                let certificates: Vec<ureq::tls::Certificate<'static>> = certificates
                    .iter()
                    .map(|der| ureq::tls::Certificate::from_der(der).to_owned())
                    .collect();
                builder.root_certs(ureq::tls::RootCerts::new_with_certs(&certificates))
            }
        }
        .build()
    }
}

impl Default for WebhookConfig {
    fn default() -> WebhookConfig {
        WebhookConfig {
            timeout: Duration::from_secs(5),
            attempts: 4,
            first_backoff: Duration::from_millis(500),
            failures_to_open: 5,
            open_for: Duration::from_secs(30),
            queue: 1000,
            roots: WebhookRoots::WebPki,
        }
    }
}

/// Counters of webhook deliveries.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Deliveries answered with a 2xx status.
    pub delivered: AtomicU64,
    /// Deliveries that failed every attempt.
    pub failed: AtomicU64,
    /// Attempts after a failed one.
    pub retries: AtomicU64,
    /// Deliveries refused at once because the URL's circuit was open.
    pub short_circuited: AtomicU64,
    /// Deliveries dropped because the URL's queue was full.
    pub dropped: AtomicU64,
}

/// One URL's circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Circuit {
    Closed { failures: u32 },
    Open { until: Instant },
}

struct Endpoint {
    queue: SyncSender<String>,
}

/// Sends webhooks; cheap to share.
pub(crate) struct Webhooks {
    config: WebhookConfig,
    endpoints: Mutex<HashMap<String, Endpoint>>,
    stats: Arc<WebhookStats>,
}

impl Webhooks {
    pub(crate) fn new(config: WebhookConfig, stats: Arc<WebhookStats>) -> Webhooks {
        Webhooks {
            config,
            endpoints: Mutex::new(HashMap::new()),
            stats,
        }
    }

    /// Queues `body` (JSON) for `url`; returns at once.
    pub(crate) fn send(&self, url: &str, body: String) {
        let mut endpoints = self.endpoints.lock();
        let endpoint = match endpoints.get(url) {
            Some(endpoint) => endpoint,
            None => match self.start_endpoint(url) {
                Some(endpoint) => endpoints.entry(url.to_owned()).or_insert(endpoint),
                None => {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
        };
        match endpoint.queue.try_send(body) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(url, "webhook queue full: delivery dropped");
            }
            Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                endpoints.remove(url);
            }
        }
    }

    fn start_endpoint(&self, url: &str) -> Option<Endpoint> {
        let (queue, receiver) = sync_channel(self.config.queue.max(1));
        let worker = Worker {
            url: url.to_owned(),
            config: self.config.clone(),
            stats: Arc::clone(&self.stats),
            circuit: Circuit::Closed { failures: 0 },
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(self.config.timeout))
                .tls_config(self.config.roots.tls_config())
                .build()
                .into(),
        };
        let spawned = std::thread::Builder::new()
            .name("fleetwire-webhook".to_owned())
            .spawn(move || worker.run(receiver));
        match spawned {
            Ok(_) => Some(Endpoint { queue }),
            Err(error) => {
                tracing::error!(url, %error, "cannot start a webhook thread");
                None
            }
        }
    }
}

struct Worker {
    url: String,
    config: WebhookConfig,
    stats: Arc<WebhookStats>,
    circuit: Circuit,
    agent: ureq::Agent,
}

impl Worker {
    /// Delivers the queue's documents one by one, until the platform drops the sender.
    fn run(mut self, queue: Receiver<String>) {
        while let Ok(body) = queue.recv() {
            self.deliver(&body);
        }
    }

    fn deliver(&mut self, body: &str) {
        if let Circuit::Open { until } = self.circuit {
            if Instant::now() < until {
                self.stats.short_circuited.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        // Half open after the wait: one attempt decides.
        let is_half_open = matches!(self.circuit, Circuit::Open { .. });
        let attempts = if is_half_open {
            1
        } else {
            self.config.attempts.max(1)
        };
        let mut backoff = self.config.first_backoff;
        for attempt in 1..=attempts {
            match self.attempt(body) {
                Ok(()) => {
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    if is_half_open {
                        tracing::info!(url = %self.url, "webhook circuit closed again");
                    }
                    self.circuit = Circuit::Closed { failures: 0 };
                    return;
                }
                Err(error) => {
                    tracing::debug!(url = %self.url, attempt, %error, "webhook attempt failed");
                    if attempt < attempts {
                        self.stats.retries.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(backoff);
                        backoff = backoff.saturating_mul(2);
                    } else {
                        tracing::warn!(url = %self.url, attempts, %error, "webhook delivery failed");
                    }
                }
            }
        }
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        let failures = match self.circuit {
            Circuit::Closed { failures } => failures + 1,
            Circuit::Open { .. } => self.config.failures_to_open,
        };
        self.circuit = if failures >= self.config.failures_to_open {
            tracing::warn!(url = %self.url, open_for = ?self.config.open_for, "webhook circuit open");
            Circuit::Open {
                until: Instant::now() + self.config.open_for,
            }
        } else {
            Circuit::Closed { failures }
        };
    }

    fn attempt(&self, body: &str) -> Result<(), String> {
        let request = ureq::http::Request::builder()
            .method("POST")
            .uri(&self.url)
            .header("content-type", "application/json")
            .header("user-agent", "fleetwire-webhook")
            .body(body.to_owned())
            .map_err(|error| format!("invalid request: {error}"))?;
        let response = self.agent.run(request).map_err(|error| error.to_string())?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered HTTP {}", status.as_u16()))
        }
    }
}
