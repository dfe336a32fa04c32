//! A real PostgreSQL with pgvector for the tests: `scripts/postgres` starts
//! a primary (and, when a test asks, a streaming hot-standby replica of it)
//! on free loopback ports with throwaway data directories. The tests of one
//! binary share it while any of them runs (each with databases of its own);
//! the last one done stops it by port.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, Weak};

use super::{closed_port, unavailable};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/postgres");

pub struct Cluster {
    dir: tempfile::TempDir,
    pub port: u16,
    /// `postgres://ragmap:PASSWORD@127.0.0.1:PORT/ragmap`.
    pub url: String,
    replica: Mutex<Option<(u16, String)>>,
}

/// Runs `scripts/postgres ARGS` with `env`; its stdout, or its stderr as the error.
fn script(args: &[&str], env: &[(&str, &str)]) -> Result<String, String> {
    let out = Command::new("bash")
        .arg(SCRIPT)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Settings for throwaway servers: durability off, room for several
/// servers' pools.
const OPTIONS: &str =
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300";

/// The shared cluster, started when no test holds it (otherwise the test
/// skips, or fails in CI, when PostgreSQL is not installed:
/// `bash scripts/postgres install`, which scripts/test runs).
pub fn pg_cluster() -> Option<Arc<Cluster>> {
    static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(cluster) = shared.upgrade() {
        return Some(cluster);
    }
    if script(&["check"], &[]).is_err() {
        return unavailable(
            "PostgreSQL + pgvector are not installed (bash scripts/postgres install)",
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("pg")
        .tempdir_in("/tmp")
        .unwrap();
    // The server runs as another user when the tests run as root.
    set_mode(dir.path(), 0o755);
    let port = closed_port();
    let data = dir.path().join("primary");
    let url = script(
        &["start", &port.to_string()],
        &[
            ("RAGMAP_PG_DATA", data.to_str().unwrap()),
            ("RAGMAP_PG_OPTIONS", OPTIONS),
        ],
    )
    .unwrap_or_else(|e| panic!("scripts/postgres start {port} failed: {e}"));
    let cluster = Arc::new(Cluster {
        dir,
        port,
        url,
        replica: Mutex::new(None),
    });
    *shared = Arc::downgrade(&cluster);
    Some(cluster)
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

impl Cluster {
    /// Runs `sql` as the superuser in database `db`; its output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        script(
            &["psql", &self.port.to_string(), "-d", db, "-At", "-c", sql],
            &[],
        )
        .unwrap_or_else(|e| panic!("psql {sql:?} failed: {e}"))
    }

    /// `sql` run as the superuser by a psql process of its own (to hold a
    /// lock while a test runs ragmap).
    pub fn psql_background(&self, db: &str, sql: &str) -> std::process::Child {
        Command::new("bash")
            .arg(SCRIPT)
            .args(["psql", &self.port.to_string(), "-d", db, "-c", sql])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Waits (up to 20 s) until `sql` in `db` answers `expected`.
    pub fn wait_for(&self, db: &str, sql: &str, expected: &str) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if self.psql(db, sql) == expected {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    }

    /// A new, empty database `name` (with `vector`, as template1 has it);
    /// its URL.
    pub fn database(&self, name: &str) -> String {
        self.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        );
        self.psql("postgres", &format!("CREATE DATABASE {name} OWNER ragmap"));
        with_database(&self.url, name)
    }

    /// A new database without the `vector` extension; its URL.
    pub fn database_without_vector(&self, name: &str) -> String {
        self.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        );
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {name} OWNER ragmap TEMPLATE template0"),
        );
        with_database(&self.url, name)
    }

    /// The URL of database `name` on the streaming replica (started on the
    /// first call).
    pub fn replica(&self, name: &str) -> String {
        let mut replica = self.replica.lock().unwrap_or_else(|e| e.into_inner());
        if replica.is_none() {
            let port = closed_port();
            let data = self.dir.path().join("replica");
            let url = script(
                &["start-replica", &self.port.to_string(), &port.to_string()],
                &[
                    ("RAGMAP_PG_DATA", data.to_str().unwrap()),
                    ("RAGMAP_PG_OPTIONS", OPTIONS),
                ],
            )
            .unwrap_or_else(|e| panic!("scripts/postgres start-replica failed: {e}"));
            *replica = Some((port, url));
        }
        with_database(&replica.as_ref().unwrap().1, name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let replica = self.replica.lock().map(|r| r.clone()).ok().flatten();
        if let Some((port, _)) = replica {
            let _ = script(&["stop", &port.to_string()], &[]);
        }
        let _ = script(&["stop", &self.port.to_string()], &[]);
    }
}
