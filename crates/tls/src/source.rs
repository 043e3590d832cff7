//! [`TlsSource`]: the current server configuration of a set of [`TlsFiles`], replaced
//! whole when they change or on `SIGHUP`. Each handshake takes the configuration current
//! when it starts and keeps it (an `Arc`), so established connections never notice a
//! reload; a reload that fails leaves the previous configuration in place.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use rustls::ServerConfig;
use tokio::signal::unix::{Signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{TlsFiles, server_config, with_alpn};
use crate::error::Error;

/// How often [`TlsSource::watch`] looks at the files' size, modification time and inode.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long the files must stay unchanged before a reload: certificate and key are
/// usually replaced one after the other, and a file may be caught half-written.
const SETTLE: Duration = Duration::from_millis(500);
/// The most settling periods a reload waits for files that keep changing.
const MAX_SETTLES: u32 = 10;

/// The live server configuration of one set of files, in as many ALPN variants as its
/// listeners ask for (the MQTT listener and the HTTPS one share a source, so one reload
/// updates both).
///
/// ```no_run
/// # async fn example(files: fleetwire_tls::TlsFiles) -> Result<(), fleetwire_tls::Error> {
/// use std::sync::Arc;
/// use fleetwire_tls::TlsSource;
///
/// let source = Arc::new(TlsSource::load(files)?);
/// let (stop, shutdown) = tokio::sync::watch::channel(false);
/// let watcher = source.watch(shutdown);
/// // Per accepted connection:
/// let acceptor = tokio_rustls::TlsAcceptor::from(source.current_with_alpn(&[b"http/1.1"]));
/// # let _ = (stop, watcher, acceptor);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TlsSource {
    files: TlsFiles,
    state: RwLock<Loaded>,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
}

/// One reading of the files, and the ALPN variants built from it.
#[derive(Debug)]
struct Loaded {
    base: Arc<ServerConfig>,
    /// Each ALPN list asked for so far and its configuration; rebuilt at every reload.
    variants: Vec<(Vec<Vec<u8>>, Arc<ServerConfig>)>,
    /// The files' state just before they were read.
    files: FilesState,
}

impl TlsSource {
    /// Reads `files` (see [`server_config`]); fails as it does.
    pub fn load(files: TlsFiles) -> Result<TlsSource, Error> {
        let state = FilesState::of(&files);
        let base = server_config(&files)?;
        Ok(TlsSource {
            files,
            state: RwLock::new(Loaded {
                base,
                variants: Vec::new(),
                files: state,
            }),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        })
    }

    /// The files this source reads.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The current configuration, without ALPN protocols.
    pub fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.state.read().base)
    }

    /// The current configuration offering `protocols` in ALPN (see [`with_alpn`]). The
    /// first call for a list builds its variant (and later reloads rebuild it); the next
    /// ones only look it up.
    pub fn current_with_alpn(&self, protocols: &[&[u8]]) -> Arc<ServerConfig> {
        if let Some(config) = find_variant(&self.state.read(), protocols) {
            return config;
        }
        let mut state = self.state.write();
        if let Some(config) = find_variant(&state, protocols) {
            return config;
        }
        let config = with_alpn(&state.base, protocols);
        let key = protocols.iter().map(|protocol| protocol.to_vec()).collect();
        state.variants.push((key, Arc::clone(&config)));
        config
    }

    /// Reads the files again and, if they make a valid configuration, serves it to the
    /// handshakes that start from now on. On failure the previous configuration stays;
    /// both outcomes are logged and counted.
    pub fn reload(&self) -> Result<(), Error> {
        let files_state = FilesState::of(&self.files);
        match server_config(&self.files) {
            Ok(base) => {
                let mut state = self.state.write();
                let variants = state
                    .variants
                    .iter()
                    .map(|(protocols, _)| {
                        let list: Vec<&[u8]> = protocols.iter().map(Vec::as_slice).collect();
                        (protocols.clone(), with_alpn(&base, &list))
                    })
                    .collect();
                *state = Loaded {
                    base,
                    variants,
                    files: files_state,
                };
                drop(state);
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    cert_file = %self.files.cert_file.display(),
                    "TLS certificate, key and client CA reloaded"
                );
                Ok(())
            }
            Err(error) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    error = %Chain(&error),
                    "TLS reload failed; the previous certificate and key are still served"
                );
                Err(error)
            }
        }
    }

    /// Successful reloads since [`TlsSource::load`].
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Failed reloads since [`TlsSource::load`].
    pub fn reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Relaxed)
    }

    /// Starts a task that reloads on `SIGHUP` and when a file's size, modification time
    /// or inode changes (looked at every second; once a change is seen, the files must
    /// stay unchanged for half a second before the reload). A reload that fails is tried
    /// once more at the next look, then at the next change. The task ends when `shutdown`
    /// turns `true` or its sender is dropped. Needs a Tokio runtime.
    pub fn watch(self: &Arc<Self>, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(Arc::clone(self).run_watch(shutdown))
    }

    async fn run_watch(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut hangup = match tokio::signal::unix::signal(SignalKind::hangup()) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; TLS files reload on change only");
                None
            }
        };
        let mut seen = self.state.read().files.clone();
        let mut retry = false;
        let mut ticker = tokio::time::interval(POLL_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let event = tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                    continue;
                }
                () = next_hangup(&mut hangup) => Event::Hangup,
                _ = ticker.tick() => Event::Tick,
            };
            match event {
                Event::Hangup => {
                    tracing::info!("SIGHUP: reloading the TLS files");
                    seen = FilesState::of(&self.files);
                    retry = !self.reload_in_background().await;
                }
                Event::Tick => {
                    let now = FilesState::of(&self.files);
                    if now != seen {
                        let Some(settled) = self.settle(now, &mut shutdown).await else {
                            return;
                        };
                        seen = settled;
                        retry = !self.reload_in_background().await;
                    } else if retry {
                        retry = false;
                        self.reload_in_background().await;
                    }
                }
            }
        }
    }

    /// Waits until the files stay as they are for [`SETTLE`] (at most [`MAX_SETTLES`]
    /// times); `None` at shutdown.
    async fn settle(
        &self,
        mut state: FilesState,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<FilesState> {
        for _ in 0..MAX_SETTLES {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return None;
                    }
                }
                () = tokio::time::sleep(SETTLE) => {}
            }
            let now = FilesState::of(&self.files);
            if now == state {
                break;
            }
            state = now;
        }
        Some(state)
    }

    /// [`TlsSource::reload`] on a blocking thread (it reads files and checks keys);
    /// whether it succeeded.
    async fn reload_in_background(self: &Arc<Self>) -> bool {
        let source = Arc::clone(self);
        matches!(
            tokio::task::spawn_blocking(move || source.reload()).await,
            Ok(Ok(()))
        )
    }
}

enum Event {
    Hangup,
    Tick,
}

fn find_variant(state: &Loaded, protocols: &[&[u8]]) -> Option<Arc<ServerConfig>> {
    state
        .variants
        .iter()
        .find(|(key, _)| key.iter().map(Vec::as_slice).eq(protocols.iter().copied()))
        .map(|(_, config)| Arc::clone(config))
}

/// The next `SIGHUP`; never, if there is no handler.
async fn next_hangup(signal: &mut Option<Signal>) {
    match signal {
        Some(stream) => {
            if stream.recv().await.is_none() {
                *signal = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// What tells a file was replaced or rewritten: per file, its size, modification time
/// and inode (`None`: missing or unreadable).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FilesState(Vec<Option<(u64, Option<SystemTime>, u64)>>);

impl FilesState {
    fn of(files: &TlsFiles) -> FilesState {
        FilesState(
            files
                .paths()
                .map(|path| {
                    std::fs::metadata(path)
                        .ok()
                        .map(|meta| (meta.len(), meta.modified().ok(), meta.ino()))
                })
                .collect(),
        )
    }
}

/// An error and its causes, `: `-separated, for a log line.
struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(formatter, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}
