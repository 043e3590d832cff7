//! A fresh registry per test on either backend, and the macro that runs a test on both.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fleetwire_registry::{Registry, RegistryConfig};

use crate::postgres::PostgresServer;

/// A registry on its own database, and what keeps that database alive.
pub(crate) struct TestRegistry {
    pub(crate) registry: Registry,
    url: String,
    _storage: Storage,
}

enum Storage {
    Sqlite { _dir: TempDir },
    Postgres { _server: Arc<PostgresServer> },
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

impl TestRegistry {
    pub(crate) async fn open(backend: Backend) -> TestRegistry {
        let (url, storage) = match backend {
            Backend::Sqlite => {
                let dir = TempDir::new();
                let registry = Registry::open_in_dir(&dir.0)
                    .await
                    .expect("opening a SQLite registry");
                let url = format!("sqlite://{}", dir.0.join("registry.db").display());
                return TestRegistry {
                    registry,
                    url,
                    _storage: Storage::Sqlite { _dir: dir },
                };
            }
            Backend::Postgres => {
                let server = PostgresServer::shared();
                (
                    server.create_database(),
                    Storage::Postgres { _server: server },
                )
            }
        };
        TestRegistry {
            registry: Registry::open(&url)
                .await
                .expect("opening a PostgreSQL registry"),
            url,
            _storage: storage,
        }
    }

    /// The database URL.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Another registry on the same database, as a restarted process or a second node
    /// would open it.
    pub(crate) async fn open_again(&self) -> Registry {
        Registry::open_with(&self.url, RegistryConfig::default())
            .await
            .expect("opening the registry again")
    }
}

/// A directory removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "fleetwire-registry-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creating a temporary directory");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// For each named `async fn(TestRegistry)`, a module with a `sqlite` and a `postgres` test.
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        $(
            mod $test {
                use crate::backend::{Backend, TestRegistry};

                #[tokio::test]
                async fn sqlite() {
                    super::$test(TestRegistry::open(Backend::Sqlite).await).await;
                }

                #[tokio::test]
                async fn postgres() {
                    super::$test(TestRegistry::open(Backend::Postgres).await).await;
                }
            }
        )*
    };
}
pub(crate) use on_both_backends;
