//! A loopback HTTP/1.1 server whose every reply a test scripts: fixed or
//! computed from the request, any status and headers, bodies sent whole, in
//! chunks or until the connection closes, with pauses between pieces, stalls
//! before the headers, and streams cut off mid-way. It records every request.
//!
//! Plain std (a thread per connection), so it serves the same under any async
//! runtime or none. One request per connection (`Connection: close`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target as sent: path and query.
    pub path: String,
    /// Header names lower-cased, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub received: Instant,
    /// How many requests for this path have arrived, this one included (1 for the first).
    pub nth: usize,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Debug, Clone)]
enum Step {
    Piece(Vec<u8>),
    Sleep(Duration),
    Cut,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    /// `Content-Length` of all the pieces.
    Length,
    /// `Transfer-Encoding: chunked`, one chunk a piece.
    Chunked,
    /// Neither: the body ends when the connection closes.
    UntilClose,
}

/// One scripted response. Built as `Reply::new(200).header(..).body(..)`;
/// every piece of the body is written (and flushed) on its own, so `sleep`
/// between pieces paces a stream.
#[derive(Debug, Clone)]
pub struct Reply {
    /// `None`: no response at all (see [`Reply::silent`]).
    status: Option<u16>,
    headers: Vec<(String, String)>,
    framing: Framing,
    steps: Vec<Step>,
}

impl Reply {
    /// A response with this status, an empty body so far, `Content-Length` framing.
    pub fn new(status: u16) -> Reply {
        Reply {
            status: Some(status),
            headers: Vec::new(),
            framing: Framing::Length,
            steps: Vec::new(),
        }
    }

    /// Accepts and reads the request but never answers; with `sleep`, a
    /// server that stalls before its headers.
    pub fn silent() -> Reply {
        Reply {
            status: None,
            ..Reply::new(0)
        }
    }

    /// A whole body of the given content type.
    pub fn with_body(status: u16, content_type: &str, body: impl AsRef<[u8]>) -> Reply {
        Reply::new(status)
            .header("Content-Type", content_type)
            .body(body)
    }

    pub fn json(status: u16, body: &str) -> Reply {
        Reply::with_body(status, "application/json; charset=utf-8", body)
    }

    pub fn html(body: &str) -> Reply {
        Reply::with_body(200, "text/html; charset=utf-8", body)
    }

    /// `Transfer-Encoding: chunked`: each piece of the body is one chunk, and
    /// the terminating chunk follows the last (unless [`Reply::cut`]).
    pub fn chunked(mut self) -> Reply {
        self.framing = Framing::Chunked;
        self
    }

    /// No length and no chunking: the body is whatever arrives before the
    /// connection closes.
    pub fn until_close(mut self) -> Reply {
        self.framing = Framing::UntilClose;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Appends one piece of the body.
    pub fn body(mut self, piece: impl AsRef<[u8]>) -> Reply {
        self.steps.push(Step::Piece(piece.as_ref().to_vec()));
        self
    }

    /// Pauses before what follows (the first piece, or the headers of a silent reply).
    pub fn sleep(mut self, ms: u64) -> Reply {
        self.steps.push(Step::Sleep(Duration::from_millis(ms)));
        self
    }

    /// Closes the connection here, whatever the framing promised: a chunked
    /// body without its terminator, or one shorter than its `Content-Length`.
    pub fn cut(mut self) -> Reply {
        self.steps.push(Step::Cut);
        self
    }

    fn head(&self, status: u16) -> Vec<u8> {
        // Clients ignore the reason phrase.
        let mut head = format!("HTTP/1.1 {status} Scripted\r\n");
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        match self.framing {
            Framing::Length => {
                let length: usize = self
                    .steps
                    .iter()
                    .map(|s| match s {
                        Step::Piece(p) => p.len(),
                        _ => 0,
                    })
                    .sum();
                head.push_str(&format!("Content-Length: {length}\r\n"));
            }
            Framing::Chunked => head.push_str("Transfer-Encoding: chunked\r\n"),
            Framing::UntilClose => {}
        }
        head.push_str("Connection: close\r\n\r\n");
        head.into_bytes()
    }

    /// Writes the reply, each piece on its own (the head with the first);
    /// stops at the first failed write (the client left).
    fn write_to(&self, stream: &mut TcpStream) {
        let mut out = self.status.map(|s| self.head(s)).unwrap_or_default();
        for step in &self.steps {
            match step {
                // An empty chunk would read as the end of the body.
                Step::Piece(piece) if self.framing == Framing::Chunked && piece.is_empty() => {}
                Step::Piece(piece) if self.framing == Framing::Chunked => {
                    out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    out.extend_from_slice(piece);
                    out.extend_from_slice(b"\r\n");
                }
                Step::Piece(piece) => out.extend_from_slice(piece),
                Step::Sleep(pause) => {
                    if !send(stream, &mut out) {
                        return;
                    }
                    std::thread::sleep(*pause);
                }
                Step::Cut => {
                    send(stream, &mut out);
                    return;
                }
            }
            if !send(stream, &mut out) {
                return;
            }
        }
        if self.status.is_some() && self.framing == Framing::Chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        send(stream, &mut out);
    }
}

/// Writes and empties `out`; false when the client is gone.
fn send(stream: &mut TcpStream, out: &mut Vec<u8>) -> bool {
    if out.is_empty() {
        return true;
    }
    let sent = stream.write_all(out).is_ok();
    out.clear();
    sent
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// The scripted server; stops accepting when dropped.
pub struct ScriptedServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    closed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl ScriptedServer {
    /// Answers every request with `handler(request)`.
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> ScriptedServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        ScriptedServer::on(listener, handler)
    }

    /// Like [`ScriptedServer::start`] on a given loopback port (a default
    /// port ragmap looks at); `None` when something else holds it.
    pub fn start_at(
        port: u16,
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> Option<ScriptedServer> {
        let listener = TcpListener::bind(("127.0.0.1", port)).ok()?;
        Some(ScriptedServer::on(listener, handler))
    }

    fn on(
        listener: TcpListener,
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> ScriptedServer {
        let server = ScriptedServer {
            addr: listener.local_addr().unwrap(),
            requests: Arc::default(),
            closed: Arc::default(),
            stop: Arc::default(),
        };
        let handler: Arc<Handler> = Arc::new(handler);
        let (requests, closed, stop) = (
            server.requests.clone(),
            server.closed.clone(),
            server.stop.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (handler, requests, closed) =
                    (handler.clone(), requests.clone(), closed.clone());
                std::thread::spawn(move || serve(stream, &*handler, &requests, &closed));
            }
        });
        server
    }

    /// Answers the n-th request with `replies[n]`, in order of arrival; any
    /// request beyond them gets a 500 that says so.
    pub fn replies(replies: Vec<Reply>) -> ScriptedServer {
        let next = AtomicUsize::new(0);
        ScriptedServer::start(move |_| {
            let n = next.fetch_add(1, Ordering::SeqCst);
            replies.get(n).cloned().unwrap_or_else(|| {
                Reply::json(
                    500,
                    &format!(
                        r#"{{"error":"scripted server: no reply for request {}"}}"#,
                        n + 1
                    ),
                )
            })
        })
    }

    /// Answers every request with the same reply.
    pub fn always(reply: Reply) -> ScriptedServer {
        ScriptedServer::start(move |_| reply.clone())
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The requests received so far, in order of arrival.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits (without blocking an async runtime's thread) until `n`
    /// connections have been answered or given up on, for at most `timeout`.
    pub async fn wait_closed(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.closed.load(Ordering::SeqCst) < n {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread so that it sees the flag and lets go of the port.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(
    mut stream: TcpStream,
    handler: &Handler,
    requests: &Mutex<Vec<Request>>,
    closed: &AtomicUsize,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(mut reader) = stream.try_clone().map(BufReader::new) else {
        return;
    };
    let Some(request) = read_request(&mut reader, requests) else {
        return; // a connection that sent no request (a probe, the wake-up at drop)
    };
    handler(&request).write_to(&mut stream);
    let _ = stream.shutdown(Shutdown::Write);
    closed.fetch_add(1, Ordering::SeqCst);
    // Read until the client closes: closing with unread input would reset the
    // connection and could destroy the response before the client reads it.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = std::io::copy(&mut reader, &mut std::io::sink());
}

/// Reads one request (head and a `Content-Length` body) and records it.
fn read_request(
    reader: &mut BufReader<TcpStream>,
    requests: &Mutex<Vec<Request>>,
) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    let mut seen = requests.lock().unwrap();
    let nth = 1 + seen.iter().filter(|r| r.path == path).count();
    let request = Request {
        method,
        path,
        headers,
        body,
        received: Instant::now(),
        nth,
    };
    seen.push(request.clone());
    Some(request)
}

/// An OpenAI `/v1/embeddings` answer to `request`: one vector of `dimensions`
/// per input, the same text always giving the same unit vector.
pub fn embeddings_reply(request: &Request, dimensions: usize) -> Reply {
    let inputs = request.json()["input"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let data: Vec<serde_json::Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let vector = fake_vector(t.as_str().unwrap_or(""), dimensions);
            serde_json::json!({"object": "embedding", "index": i, "embedding": vector})
        })
        .collect();
    let body = serde_json::json!({"object": "list", "data": data, "model": "m"});
    Reply::json(200, &body.to_string())
}

/// A deterministic unit vector of `dimensions` for `text`.
pub fn fake_vector(text: &str, dimensions: usize) -> Vec<f32> {
    let mut seed = text.bytes().fold(1469598103934665603u64, |h, b| {
        (h ^ b as u64).wrapping_mul(1099511628211)
    });
    let v: Vec<f32> = (0..dimensions)
        .map(|_| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}
