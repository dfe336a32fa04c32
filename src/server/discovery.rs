//! `index/server.json` (with `[index] url`, `.ragmap/server-<hash>.json`,
//! one per database): where a running `ragmap serve` of this workspace
//! listens, so the command line can send its searches there instead of
//! loading the model itself. Written when the server starts listening,
//! removed when it stops; a file left by a killed server is recognised as
//! stale (its process is gone, or another process answers at its address).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Config;

pub const FILE: &str = "server.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    /// Base URL, e.g. `http://127.0.0.1:8765`.
    pub url: String,
    pub pid: u32,
    /// The index generation the server had loaded when it wrote the file.
    pub generation: String,
    /// Random per start; the server sends it back in `x-ragmap-instance`, so
    /// a client knows it reached this server and not whatever took its port.
    pub instance: String,
    pub started_at: String,
}

pub fn path(config: &Config) -> PathBuf {
    match config.index.database_url() {
        // A server of another database is not this command's.
        Some(_) => {
            let location = crate::index::location(config);
            let hash = crate::corpus::content_hash(location.as_bytes());
            config
                .state_dir()
                .join(format!("server-{}.json", &hash[..hash.len().min(12)]))
        }
        None => config.state_dir().join(FILE),
    }
}

pub fn write(config: &Config, running: &Running) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(running).map_err(std::io::Error::other)?;
    std::fs::create_dir_all(config.state_dir())?;
    crate::corpus::write_atomic(&path(config), &json)
}

/// Removes the file if it is still `instance`'s (a newer server may have
/// replaced it).
pub fn remove(config: &Config, instance: &str) {
    if read(config).is_some_and(|r| r.instance == instance) {
        let _ = std::fs::remove_file(path(config));
    }
}

fn read(config: &Config) -> Option<Running> {
    let bytes = std::fs::read(path(config)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The workspace's server, unless there is none or its process is gone.
pub fn find(config: &Config) -> Option<Running> {
    read(config).filter(|r| process_alive(r.pid))
}

#[cfg(target_os = "linux")]
fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(not(target_os = "linux"))]
fn process_alive(_pid: u32) -> bool {
    // Elsewhere the instance check on the first request decides.
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(pid: u32, instance: &str) -> Running {
        Running {
            url: "http://127.0.0.1:1".into(),
            pid,
            generation: "g".into(),
            instance: instance.into(),
            started_at: "now".into(),
        }
    }

    #[test]
    fn a_live_file_is_found_a_dead_one_is_not_and_only_its_owner_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            workspace: dir.path().to_path_buf(),
            ..Config::default()
        };
        std::fs::create_dir_all(config.index_dir()).unwrap();
        assert_eq!(find(&config), None);

        let me = running(std::process::id(), "a");
        write(&config, &me).unwrap();
        assert_eq!(find(&config), Some(me.clone()));
        remove(&config, "b");
        assert!(path(&config).is_file(), "not b's file");
        remove(&config, "a");
        assert!(!path(&config).exists());

        // A pid no process has (beyond Linux's pid_max).
        write(&config, &running(u32::MAX - 1, "c")).unwrap();
        assert_eq!(find(&config), None);
        std::fs::write(path(&config), "{not json").unwrap();
        assert_eq!(find(&config), None);
    }
}
