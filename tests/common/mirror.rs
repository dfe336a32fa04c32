//! `../shared/webcorpus/serve.py`, the offline mirror of the roadmap's pages
//! with its fault pages, on a free port for one test.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The path the readiness probe asks for; left out of [`Mirror::requests`].
const PROBE: &str = "/.harness-probe";

/// serve.py on a free port, logging every request; killed on drop.
pub struct Mirror {
    child: Child,
    pub port: u16,
    /// The webcorpus folder (MANIFEST.tsv, site/).
    pub root: PathBuf,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

/// One line of serve.py's request log.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub path: String,
    pub status: u64,
    pub ua: String,
    pub bytes: u64,
    /// Seconds since the epoch when the request arrived and was answered.
    pub start: f64,
    pub end: f64,
    pub aborted: bool,
}

impl Mirror {
    /// Starts the mirror and waits until it answers HTTP (None, with a SKIP
    /// message, when the webcorpus is absent locally).
    pub fn start() -> Option<Mirror> {
        let root = super::webcorpus()?;
        let log_dir = tempfile::tempdir().unwrap();
        let log = log_dir.path().join("requests.jsonl");
        for _ in 0..5 {
            let port = super::closed_port();
            let mut child = Command::new("python3")
                .arg(root.join("serve.py"))
                .arg(port.to_string())
                .arg("--log")
                .arg(&log)
                .args(["--max-seconds", "300"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("python3 runs serve.py");
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port was taken meanwhile: try another
                }
                if answers(port) {
                    return Some(Mirror {
                        child,
                        port,
                        root,
                        log,
                        _log_dir: log_dir,
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("{}: serve.py did not start", super::test_name());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request served so far, in log order (the readiness probe left out).
    pub fn requests(&self) -> Vec<LogLine> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["path"] != PROBE)
            .map(|v| {
                let end = v["ts"].as_f64().unwrap();
                LogLine {
                    path: v["path"].as_str().unwrap().to_string(),
                    status: v["status"].as_u64().unwrap(),
                    ua: v["ua"].as_str().unwrap_or("").to_string(),
                    bytes: v["bytes"].as_u64().unwrap_or(0),
                    start: end - v["ms"].as_f64().unwrap() / 1000.0,
                    end,
                    aborted: v["aborted"].as_bool().unwrap_or(false),
                }
            })
            .collect()
    }

    /// The mirrored file behind a URL path (for known-content checks).
    pub fn file(&self, path: &str) -> Vec<u8> {
        std::fs::read(self.root.join("site").join(path.trim_start_matches('/'))).unwrap()
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

/// True when an HTTP server answers a GET on the port.
fn answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {PROBE} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut head = [0u8; 8];
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.")
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
