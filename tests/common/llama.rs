//! A llama.cpp server of a test's own (`scripts/llm-server start PORT` with
//! an environment, e.g. a small `LLAMA_CTX`), stopped when dropped; and a
//! forwarder that puts a scripted server in front of a real one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{Reply, Request};

/// A `llama-server` started by `scripts/llm-server` for one test.
pub struct LlamaServer {
    pub port: u16,
    /// `http://127.0.0.1:PORT/v1`.
    pub url: String,
}

impl LlamaServer {
    /// Starts one with `env` (e.g. `LLAMA_CTX`); `None`, with a SKIP message
    /// (a failure under CI), when the tests have no llama.cpp server
    /// (RAGMAP_TEST_LLM_URL unset: scripts/test installs and sets it).
    pub fn start(env: &[(&str, &str)]) -> Option<LlamaServer> {
        super::llm_url()?;
        let port = super::closed_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/llm-server");
        let out = Command::new("bash")
            .arg(script)
            .args(["start", &port.to_string()])
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/llm-server start {port}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Some(LlamaServer { port, url })
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/llm-server");
        let _ = Command::new("bash")
            .arg(script)
            .args(["stop", &self.port.to_string()])
            .output();
    }
}

/// Sends `request` on to `127.0.0.1:port` and answers with what came back
/// (the whole body at once; a chunked one joined).
pub fn forward(request: &Request, port: u16) -> Reply {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let head = format!(
        "{} {} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        request.method,
        request.path,
        request.body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&request.body).unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let (mut content_type, mut chunked) = (String::from("application/json"), false);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-type" => content_type = v.trim().to_string(),
                "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
                _ => {}
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).unwrap();
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        reader.read_to_end(&mut body).unwrap();
    }
    Reply::with_body(status, &content_type, body)
}
