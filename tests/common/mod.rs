//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ragmap::config::Config;

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// True when the embedding assets from `scripts/setup` are installed. Locally a
/// missing install skips the test with a message; in CI it fails the test.
pub fn model_available(test: &str) -> bool {
    let config = Config::default();
    match ragmap::embed::check_assets(&config) {
        Ok(()) => true,
        Err(e) if in_ci() => panic!("{test}: embedding assets missing in CI: {e}"),
        Err(e) => {
            eprintln!("SKIP {test}: {e}");
            false
        }
    }
}

/// The real llama-server's base URL that `scripts/test` starts (skips
/// locally when unset, fails in CI).
pub fn llm_url(test: &str) -> Option<String> {
    match std::env::var("RAGMAP_TEST_LLM_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if in_ci() => panic!(
            "{test}: RAGMAP_TEST_LLM_URL is not set in CI (scripts/test starts llama-server)"
        ),
        _ => {
            eprintln!("SKIP {test}: RAGMAP_TEST_LLM_URL not set");
            None
        }
    }
}

/// `../shared` beside the project, when present (skips locally, fails in CI).
pub fn shared_dir(test: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if dir.is_dir() {
        return Some(dir);
    }
    if in_ci() {
        panic!("{test}: ../shared is missing in CI");
    }
    eprintln!("SKIP {test}: ../shared is absent");
    None
}

/// A scratch workspace with an empty corpus/ and the given config.toml text.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new(config_toml: &str) -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("corpus")).unwrap();
        std::fs::write(dir.path().join("config.toml"), config_toml).unwrap();
        Workspace { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn corpus(&self) -> PathBuf {
        self.dir.path().join("corpus")
    }

    pub fn write_doc(&self, rel: &str, text: &str) {
        let p = self.corpus().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn config(&self) -> Config {
        Config::load(self.path()).unwrap()
    }

    /// `ragmap index` through the library (incremental, no progress bar).
    pub fn build_index(&self) -> ragmap::index::BuildReport {
        let options = ragmap::index::BuildOptions {
            rebuild: false,
            progress: false,
        };
        ragmap::index::build(&self.config(), &options).unwrap()
    }

    /// Runs the real binary in this workspace.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ragmap"));
        cmd.arg("-C").arg(self.path()).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A user-facing failure: the given exit code, one line on stderr, no panic.
pub fn assert_clean_failure(o: &Output, code: i32, must_mention: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(!err.contains("panicked"), "panicked: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "expected one line, got: {err}"
    );
    assert!(
        err.contains(must_mention),
        "expected {must_mention:?} in: {err}"
    );
}

/// `../shared/webcorpus/serve.py` on a free port; killed on drop.
pub struct Mirror {
    child: std::process::Child,
    pub port: u16,
    pub root: PathBuf,
}

impl Mirror {
    /// Starts the mirror (None, with a SKIP message, when ../shared is absent locally).
    pub fn start(test: &str) -> Option<Mirror> {
        let root = shared_dir(test)?.join("webcorpus");
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new("python3")
                .arg(root.join("serve.py"))
                .arg(port.to_string())
                .args(["--max-seconds", "300"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("python3 runs serve.py");
            let t0 = std::time::Instant::now();
            while t0.elapsed() < std::time::Duration::from_secs(10) {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(Mirror { child, port, root });
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port was taken meanwhile: try another
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("{test}: serve.py did not start");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Mirrored pages served as plain HTML (MANIFEST.tsv), ASCII paths only,
    /// without the fault pages.
    pub fn plain_pages(&self, n: usize) -> Vec<String> {
        let manifest = std::fs::read_to_string(self.root.join("MANIFEST.tsv")).unwrap();
        manifest
            .lines()
            .skip(1)
            .filter_map(|l| {
                let cols: Vec<&str> = l.split('\t').collect();
                (cols.len() >= 7 && cols[6] == "plain").then(|| cols[0].to_string())
            })
            .filter(|p| p.ends_with(".html") && p.is_ascii() && !p.contains(' '))
            .filter(|p| {
                ![
                    "/private/",
                    "/slow/",
                    "/big/",
                    "/downloads/",
                    "bilibili",
                    "zhihu",
                ]
                .iter()
                .any(|bad| p.contains(bad))
            })
            .take(n)
            .collect()
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
