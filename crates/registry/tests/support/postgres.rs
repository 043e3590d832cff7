//! A throwaway PostgreSQL server for integration tests, with nothing but the standard
//! library: `initdb` + `pg_ctl` into a temporary directory, a Unix socket in that
//! directory (so no TCP port can clash with anything), trust authentication, `fsync` off.
//!
//! ```ignore
//! #[path = "../support/postgres.rs"]
//! mod postgres;
//!
//! let server = postgres::PostgresServer::shared(); // started once per test process
//! let url = server.create_database();              // a fresh database per test
//! // ... connect to `url` (postgres://postgres@localhost:PORT/DB?host=SOCKET_DIR) ...
//! // the server stops (pg_ctl stop -m immediate) when the last `Arc` drops
//! ```
//!
//! Binaries: `$PG_BIN_DIR` if set, else the directory of `initdb` on `PATH` (symlinks
//! followed), else the newest `/usr/lib/postgresql/*/bin`. When they are missing the
//! caller panics with a message saying how to install them: the tests fail, they do not
//! skip. As root (PostgreSQL refuses to run as root) the server runs as the `postgres` OS
//! user through `runuser`, in directories given to that user.
//!
//! `initdb` costs most of a second, so its result is kept as a template in the temporary
//! directory (one per PostgreSQL version and OS user, created atomically) and each server
//! starts from a copy: test runners that start one process per test (nextest) pay ~0.2 s
//! per server instead of ~1 s.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

/// The OS user the server runs as when the tests run as root.
const SERVER_USER: &str = "postgres";
/// Port number; with Unix sockets only it just names the socket file in our own directory.
const PORT: u16 = 5432;

/// A running PostgreSQL server; stopped, and its directory removed, on drop.
pub(crate) struct PostgresServer {
    root: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    binaries: PathBuf,
    /// `Some` when running as root: the server runs as `SERVER_USER`.
    server_user: Option<OsUser>,
    databases: AtomicU64,
}

#[derive(Clone, Copy)]
struct OsUser {
    uid: u32,
    gid: u32,
}

impl PostgresServer {
    /// The server shared by the tests of this process: started on first use, stopped when
    /// the last returned `Arc` drops (so a test process never leaves one running).
    pub(crate) fn shared() -> Arc<PostgresServer> {
        static SHARED: Mutex<Weak<PostgresServer>> = Mutex::new(Weak::new());
        let mut shared = SHARED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(server) = shared.upgrade() {
            return server;
        }
        let server = Arc::new(PostgresServer::start());
        *shared = Arc::downgrade(&server);
        server
    }

    /// Starts a new server of its own. Panics, saying why, when it cannot.
    pub(crate) fn start() -> PostgresServer {
        let binaries = binaries_dir();
        let server_user = if effective_uid() == 0 {
            Some(os_user(SERVER_USER))
        } else {
            None
        };
        let root = unique_temp_path("fleetwire-pg");
        create_private_dir(&root, server_user);
        let data_dir = root.join("data");
        let socket_dir = root.join("socket");
        create_private_dir(&socket_dir, server_user);

        let template = template_dir(&binaries, server_user);
        run(
            Command::new("cp").arg("-a").arg(&template).arg(&data_dir),
            "copying the template data dir",
        );

        let server = PostgresServer {
            root,
            data_dir,
            socket_dir,
            binaries,
            server_user,
            databases: AtomicU64::new(0),
        };
        let log = server.root.join("postgres.log");
        let options = format!(
            "-c listen_addresses='' -k '{}' -p {PORT} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200",
            server.socket_dir.display()
        );
        let output = server
            .as_server_user(&server.binaries.join("pg_ctl"))
            .arg("-D")
            .arg(&server.data_dir)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .expect("running pg_ctl start");
        if !output.status.success() {
            panic!(
                "pg_ctl start failed: {}\n{}\nserver log:\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        server
    }

    /// URL of `database` on this server, for sqlx (and libpq-style clients).
    pub(crate) fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@localhost:{PORT}/{database}?host={}",
            self.socket_dir.display()
        )
    }

    /// Creates an empty database with a name unique on this server and returns its URL.
    pub(crate) fn create_database(&self) -> String {
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            self.databases.fetch_add(1, Ordering::Relaxed)
        );
        run(
            Command::new(self.binaries.join("createdb"))
                .arg("-h")
                .arg(&self.socket_dir)
                .args(["-p", &PORT.to_string(), "-U", "postgres", &name]),
            "createdb",
        );
        self.url(&name)
    }

    /// A command that runs `program` as the server's OS user.
    fn as_server_user(&self, program: &Path) -> Command {
        as_user(self.server_user, program)
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let stopped = self
            .as_server_user(&self.binaries.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        if let Err(error) = stopped {
            eprintln!("pg_ctl stop failed: {error}");
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn as_user(user: Option<OsUser>, program: &Path) -> Command {
    match user {
        Some(_) => {
            let mut command = Command::new("runuser");
            command.args(["-u", SERVER_USER, "--"]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Runs a command to completion, panicking with its output when it fails.
fn run(command: &mut Command, what: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{what}: could not run {command:?}: {error}"));
    if !output.status.success() {
        panic!(
            "{what} failed ({}): {command:?}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

/// Where `initdb`, `pg_ctl` and `createdb` are.
fn binaries_dir() -> PathBuf {
    let has_binaries = |dir: &Path| {
        ["initdb", "pg_ctl", "createdb"]
            .iter()
            .all(|name| dir.join(name).is_file())
    };
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        let dir = PathBuf::from(dir);
        assert!(
            has_binaries(&dir),
            "PG_BIN_DIR={}: expected initdb, pg_ctl and createdb there",
            dir.display()
        );
        return dir;
    }
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("initdb"))
            .collect::<Vec<_>>()
    });
    for initdb in on_path {
        if let Some(dir) = std::fs::canonicalize(&initdb)
            .ok()
            .and_then(|real| real.parent().map(Path::to_path_buf))
        {
            if has_binaries(&dir) {
                return dir;
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_binaries(dir))
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, dir)) => dir,
        None => panic!(
            "PostgreSQL server binaries not found (initdb, pg_ctl, createdb on PATH, in \
             /usr/lib/postgresql/*/bin or in $PG_BIN_DIR): the registry's PostgreSQL tests \
             need them; install Debian's `postgresql` package (scripts/test does)"
        ),
    }
}

/// The initdb'd template for these binaries and this server user, made once.
fn template_dir(binaries: &Path, user: Option<OsUser>) -> PathBuf {
    let version = run(
        Command::new(binaries.join("initdb")).arg("--version"),
        "initdb --version",
    );
    let version: String = String::from_utf8_lossy(&version.stdout)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let owner = user.map_or(effective_uid(), |user| user.uid);
    let template = std::env::temp_dir().join(format!("fleetwire-pg-template-{owner}-{version}"));
    if template.join("PG_VERSION").is_file() {
        return template;
    }
    // Built beside, then renamed into place: a concurrent test process either sees the
    // whole template or none, and the loser of the race just uses the winner's.
    let building = unique_temp_path("fleetwire-pg-template-building");
    create_private_dir(&building, user);
    let data = building.join("data");
    run(
        as_user(user, &binaries.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ]),
        "initdb",
    );
    if std::fs::rename(&data, &template).is_err() && !template.join("PG_VERSION").is_file() {
        panic!(
            "could not move the PostgreSQL template into {}",
            template.display()
        );
    }
    let _ = std::fs::remove_dir_all(&building);
    template
}

fn unique_temp_path(prefix: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    std::env::temp_dir().join(format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Creates a directory only its owner can enter, owned by the server user when there is one.
fn create_private_dir(path: &Path, user: Option<OsUser>) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(path)
        .unwrap_or_else(|error| panic!("creating {}: {error}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .unwrap_or_else(|error| panic!("restricting {}: {error}", path.display()));
    if let Some(user) = user {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
            .unwrap_or_else(|error| panic!("giving {} to {SERVER_USER}: {error}", path.display()));
    }
}

/// The effective user id, from `/proc/self/status` (no libc needed).
fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|uid| uid.parse().ok())
        .expect("the effective uid in /proc/self/status")
}

/// Looks a user up in `/etc/passwd`.
fn os_user(name: &str) -> OsUser {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("reading /etc/passwd");
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&name))
        .and_then(|fields| {
            Some(OsUser {
                uid: fields.get(2)?.parse().ok()?,
                gid: fields.get(3)?.parse().ok()?,
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "running as root, PostgreSQL must run as the {name:?} OS user, which does not \
                 exist: install Debian's `postgresql` package (it creates the user)"
            )
        })
}
