//! `ragmap serve`: a resident server over one workspace — the OpenAI API
//! chat apps and scripts speak ([`openai`]), the Model Context Protocol at
//! `/mcp` ([`mcp`], also served on stdio by `ragmap mcp`), Dify's external
//! knowledge API ([`dify`]), ragmap's own search and health endpoints
//! ([`api`]), and a web page ([`web`]). The model, tokenizer and index load
//! once; each request then costs what retrieval and the chat model cost.
//!
//! - Answers take the same way as `ragmap ask` (see [`crate::answer`]).
//! - Requests run in parallel on a pool of retrieval workers, each with its
//!   own embedding session; past `[server] queue` requests the answer is 429.
//! - `ragmap index` may commit while the server runs: each search reads one
//!   committed state (the newest when it starts), never half of two.
//! - Loopback by default; any other address needs an API key. The key is
//!   compared in constant time and never printed.
//! - The command line finds the server through [`discovery`] and sends its
//!   searches there ([`client`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use crate::answer::Answerer;
use crate::config::{Config, RetrieveMode};
use crate::index::{Index, IndexError};
use crate::llm::LlmError;
use crate::retrieve::{RetrieveError, Retriever};

mod api;
pub mod client;
mod dify;
pub mod discovery;
mod error;
mod mcp;
mod openai;
mod web;
mod workers;

pub use mcp::serve_stdio;

use error::ApiError;
use workers::{Admission, Workers};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("refusing to listen on {addr} without an API key: set the environment variable {var} (clients send it as `Authorization: Bearer KEY`), or listen on 127.0.0.1")]
    NoKey { addr: String, var: String },
    #[error("cannot resolve [server] host {host:?}: {reason}")]
    BadHost { host: String, reason: String },
    #[error(
        "cannot listen on {addr}: {source}; is another server running there? pick another --port"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Retrieve(#[from] RetrieveError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error(transparent)]
    Watch(#[from] crate::watch::WatchError),
    #[error("the server failed: {0}")]
    Run(std::io::Error),
}

impl ServeError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ServeError::Retrieve(e) => e.exit_code(),
            ServeError::Index(e) => e.exit_code(),
            _ => crate::exit::FAILURE,
        }
    }
}

/// Where the server listens, once it does.
pub struct Ready {
    pub url: String,
    pub workers: usize,
    pub documents: i64,
    pub chunks: i64,
}

/// What every request reads.
pub(crate) struct Shared {
    config: Config,
    answerer: Arc<Answerer>,
    workers: Arc<Workers>,
    admission: Admission,
    /// The MCP tools' view of the same workers, model and limits.
    knowledge: Arc<mcp::Knowledge>,
    /// Where the server listens (its own origin, for `/mcp`'s Origin check).
    address: SocketAddr,
    /// The index as `/health` and the discovery file describe it.
    catalogue: Mutex<Box<dyn Index>>,
    api_key_digest: Option<[u8; 32]>,
    instance: String,
    started_unix: u64,
    embedding_model: String,
    worker_count: usize,
}

/// `[server] request_timeout_secs` (600 s when not positive).
fn request_timeout(config: &Config) -> Duration {
    let secs = config.server.request_timeout_secs;
    Duration::try_from_secs_f64(if secs > 0.0 { secs } else { 600.0 })
        .unwrap_or(Duration::from_secs(600))
}

impl Shared {
    fn request_timeout(&self) -> Duration {
        request_timeout(&self.config)
    }

    /// `/health`'s body; opens the index again first if it changed.
    fn catalogue_status(&self) -> Result<Value, ApiError> {
        let mut index = self
            .catalogue
            .lock()
            .map_err(|_| ApiError::internal("the index status is unavailable"))?;
        index.refresh();
        let counts = index
            .counts()
            .map_err(|e| ApiError::internal(format!("reading the index failed: {e}")))?;
        let backend = index.backend();
        Ok(json!({
            "status": "ok",
            "backend": backend.name,
            "replica_lag_seconds": backend.replica_lag_seconds,
            "documents": counts.documents,
            "chunks": counts.chunks,
            "model": self.embedding_model,
            "chat_model": self.config.llm.model,
            "chat_endpoint": self.config.llm_base_url(),
            "generation": index.generation(),
            "workers": self.worker_count,
            "instance": self.instance,
        }))
    }
}

/// Loads everything, listens, and serves until SIGINT/SIGTERM. `on_ready`
/// is called once the socket is bound (with its real port). `ask`: a chat
/// model is configured, so MCP clients are offered the `ask` tool. `watch`:
/// re-index the corpus as it changes (see [`crate::watch`]).
pub async fn serve(
    config: Config,
    ask: bool,
    watch: bool,
    on_ready: impl FnOnce(&Ready),
) -> Result<(), ServeError> {
    let addr = resolve(&config)?;
    let api_key = std::env::var(&config.server.api_key_env)
        .ok()
        .filter(|k| !k.trim().is_empty());
    if api_key.is_none() && !addr.ip().is_loopback() {
        return Err(ServeError::NoKey {
            addr: addr.to_string(),
            var: config.server.api_key_env.clone(),
        });
    }
    let worker_count = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let loading = config.clone();
    let (retrievers, catalogue) = tokio::task::spawn_blocking(move || load(&loading, worker_count))
        .await
        .map_err(|e| ServeError::Run(std::io::Error::other(e)))??;
    let answerer = Arc::new(Answerer::from_config(&config, config.llm.rewrite)?);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(ServeError::Run)?;
    let counts = catalogue.counts().unwrap_or_default();
    let generation = catalogue.generation();
    let admission = Admission::new(config.server.queue);
    let workers = Arc::new(Workers::new(retrievers));
    let knowledge = Arc::new(mcp::Knowledge::new(
        &config,
        workers.clone(),
        ask.then(|| answerer.clone()),
        Some(admission.clone()),
    ));
    let shared = Arc::new(Shared {
        admission,
        workers,
        knowledge,
        address: local,
        catalogue: Mutex::new(catalogue),
        api_key_digest: api_key.as_deref().map(digest),
        instance: random_id(),
        started_unix: unix_now(),
        embedding_model: crate::embed::model_name(&config),
        answerer,
        worker_count,
        config,
    });
    let url = format!("http://{local}");
    let running = discovery::Running {
        url: url.clone(),
        pid: std::process::id(),
        generation,
        instance: shared.instance.clone(),
        started_at: crate::corpus::now_rfc3339(),
    };
    if let Err(e) = discovery::write(&shared.config, &running) {
        eprintln!(
            "warning: cannot write {}: {e}; the command line will not find this server",
            discovery::path(&shared.config).display()
        );
    }
    on_ready(&Ready {
        url,
        workers: worker_count,
        documents: counts.documents,
        chunks: counts.chunks,
    });
    let watchers = Watchers::start(&shared, running, watch)?;
    let served = run_until_signal(listener, router(shared.clone())).await;
    watchers.stop().await;
    discovery::remove(&shared.config, &shared.instance);
    served
}

fn resolve(config: &Config) -> Result<SocketAddr, ServeError> {
    use std::net::ToSocketAddrs;
    let host = config.server.host.trim().trim_matches(['[', ']']);
    let bad = |reason: String| ServeError::BadHost {
        host: config.server.host.clone(),
        reason,
    };
    (host, config.server.port)
        .to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("no address".into()))
}

/// One retriever per worker, loaded side by side, and the status index.
fn load(config: &Config, workers: usize) -> Result<(Vec<Retriever>, Box<dyn Index>), ServeError> {
    // Every worker embeds: vector and hybrid searches and /v1/embeddings need
    // the model whatever the configured default mode.
    let mut with_model = config.clone();
    with_model.retrieve.mode = RetrieveMode::Hybrid;
    let loaded: Vec<Result<Retriever, RetrieveError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| scope.spawn(|| Retriever::open(&with_model)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(RetrieveError::Search(
                        "a worker crashed while loading".into(),
                    ))
                })
            })
            .collect()
    });
    let mut retrievers = Vec::with_capacity(workers);
    for r in loaded {
        let mut r = r?;
        r.set_settings(config.retrieve.clone());
        retrievers.push(r);
    }
    Ok((retrievers, crate::index::open(config)?))
}

/// What runs beside the listener: [`watch_index`], and with `--watch` the
/// corpus watcher.
struct Watchers {
    index: tokio::task::JoinHandle<()>,
    corpus: Option<crate::watch::Watching>,
}

impl Watchers {
    fn start(
        shared: &Arc<Shared>,
        running: discovery::Running,
        watch: bool,
    ) -> Result<Watchers, ServeError> {
        let committed = Arc::new(tokio::sync::Notify::new());
        let corpus = watch
            .then(|| start_watching(&shared.config, committed.clone()))
            .transpose()?;
        let index = tokio::spawn(watch_index(shared.clone(), running, committed));
        Ok(Watchers { index, corpus })
    }

    async fn stop(self) {
        self.index.abort();
        let Some(watching) = self.corpus else { return };
        let stopped =
            tokio::task::spawn_blocking(move || watching.stop(Duration::from_secs(2))).await;
        if !stopped.unwrap_or(true) {
            eprintln!("the index run in progress was abandoned (the index keeps its last state)");
        }
    }
}

/// `serve --watch`: the watcher on a thread of its own, its runs reported on
/// stderr; each wakes [`watch_index`].
fn start_watching(
    config: &Config,
    committed: Arc<tokio::sync::Notify>,
) -> Result<crate::watch::Watching, ServeError> {
    use crate::watch::{self, Notice};
    let options = watch::Options::from_config(config);
    let notices = move |notice| match notice {
        Notice::Watching(line) => eprintln!("{}", crate::term::sanitize(&line)),
        Notice::Warning(line) => eprintln!("warning: {}", crate::term::sanitize(&line)),
        Notice::Indexed(run) => {
            for line in run.warnings() {
                eprintln!("warning: {line}");
            }
            eprintln!("watch: {}", run.summary());
            committed.notify_one();
        }
    };
    Ok(watch::watch(config, options, notices)?)
}

/// Notices new index commits (every 2 s, and at once when `committed` is
/// notified), says so on stderr and updates the discovery file.
async fn watch_index(
    shared: Arc<Shared>,
    mut running: discovery::Running,
    committed: Arc<tokio::sync::Notify>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = committed.notified() => {}
        }
        let generation = {
            let Ok(mut index) = shared.catalogue.lock() else {
                return;
            };
            if !index.refresh() {
                continue;
            }
            index.generation()
        };
        eprintln!("index changed: now serving generation {generation}");
        running.generation = generation;
        let _ = discovery::write(&shared.config, &running);
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let limit = shared.config.server.max_body_bytes;
    let mut router = Router::new()
        .route("/", get(web::index))
        .route("/app.js", get(web::app_js))
        .route("/app.css", get(web::app_css))
        .route("/health", get(api::health))
        .route("/v1/models", get(openai::models))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/api/search", post(api::search))
        .route("/retrieval", post(dify::retrieval))
        .nest_service("/mcp", mcp_service(&shared))
        .fallback(|request: Request| async move {
            ApiError::not_found(request.uri().path()).into_response()
        })
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .layer(DefaultBodyLimit::max(limit));
    if let Some(cors) = cors(&shared.config.server.cors_origins) {
        router = router.layer(cors);
    }
    router.with_state(shared)
}

/// `/mcp` for the clients `[server]` admits: loopback names, the listening
/// host and `allowed_hosts` in `Host`; the server's own origin and
/// `cors_origins` in `Origin`.
fn mcp_service(shared: &Shared) -> mcp::HttpService {
    let server = &shared.config.server;
    let port = shared.address.port();
    let host = server.host.trim().trim_matches(['[', ']']).to_string();
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).into();
    let specific = host
        .parse::<std::net::IpAddr>()
        .map_or(true, |ip| !ip.is_unspecified());
    if specific && !host.is_empty() {
        hosts.push(host);
    }
    hosts.extend(server.allowed_hosts.iter().map(|h| h.trim().to_string()));
    let any_host = hosts.iter().any(|h| h == "*");
    let mut origins: Vec<String> = hosts
        .iter()
        .filter(|h| *h != "*")
        .map(|h| match h.parse::<std::net::Ipv6Addr>() {
            Ok(_) => format!("http://[{h}]:{port}"),
            Err(_) => format!("http://{h}:{port}"),
        })
        .collect();
    origins.extend(server.cors_origins.iter().map(|o| o.trim().to_string()));
    mcp::http_service(
        shared.knowledge.clone(),
        (!any_host).then_some(hosts),
        origins,
        server.max_body_bytes,
    )
}

/// CORS for the configured origins only; none configured, no CORS headers.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim()).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            // MCP clients send headers of their own (`Mcp-Protocol-Version`,
            // `Mcp-Method`, …); the origins are the configured ones only.
            .allow_headers(AllowHeaders::mirror_request()),
    )
}

/// The page and `/health` are open; `/retrieval` checks the key itself (Dify
/// wants its own error shape); everything else needs the key when the server
/// has one. Every response names the server instance.
async fn guard(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let open = matches!(
        request.uri().path(),
        "/" | "/app.js" | "/app.css" | "/health" | "/retrieval"
    ) || request.method() == Method::OPTIONS;
    let mut response = match &shared.api_key_digest {
        Some(expected) if !open && !has_key(&request, expected) => {
            ApiError::unauthorized().into_response()
        }
        _ => next.run(request).await,
    };
    if let Ok(v) = HeaderValue::from_str(&shared.instance) {
        response.headers_mut().insert(client::INSTANCE_HEADER, v);
    }
    response
}

fn has_key(request: &Request, expected: &[u8; 32]) -> bool {
    let Some(given) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    key_matches(given, expected)
}

/// Whether `given` is the key whose digest is `expected`. Comparing digests
/// takes the same time whatever the key's length or the position of the
/// first wrong byte.
fn key_matches(given: &str, expected: &[u8; 32]) -> bool {
    let given = digest(given.trim());
    given
        .iter()
        .zip(expected)
        .fold(0u8, |diff, (a, b)| diff | (a ^ b))
        == 0
}

fn digest(key: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(key.as_bytes()).into()
}

/// A POST request admitted: what every POST endpoint takes first, a place
/// in the queue (429 when it is full), then the body as JSON (413 past the
/// size limit, 400 for anything that is not the expected JSON). The ticket
/// holds the place until it drops.
pub(crate) struct Admitted<T> {
    pub ticket: workers::Ticket,
    pub request: T,
}

impl<T: serde::de::DeserializeOwned> FromRequest<Arc<Shared>> for Admitted<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, shared: &Arc<Shared>) -> Result<Self, ApiError> {
        let ticket = shared.admission.admit()?;
        let limit = shared.config.server.max_body_bytes;
        let body =
            Bytes::from_request(request, shared)
                .await
                .map_err(|rejection| match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(limit),
                    _ => {
                        ApiError::bad_request(format!("cannot read the request body: {rejection}"))
                    }
                })?;
        let request = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "the request is not valid JSON for this endpoint: {e}"
            ))
        })?;
        Ok(Admitted { ticket, request })
    }
}

/// Seconds since the Unix epoch, as OpenAI's `created` fields count them.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// 64 random bits as hex: request and instance ids.
fn random_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Serves until SIGINT or SIGTERM, then lets running requests finish for a
/// few seconds (an endless stream must not keep the process alive).
async fn run_until_signal(
    listener: tokio::net::TcpListener,
    app: Router,
) -> Result<(), ServeError> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut stopped = stop_rx.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stopped.wait_for(|s| *s).await;
    });
    let server = tokio::spawn(async move { server.await });
    shutdown_signal().await;
    eprintln!("shutting down");
    let _ = stop_tx.send(true);
    let started = Instant::now();
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(result)) => result.map_err(ServeError::Run),
        Ok(Err(e)) => Err(ServeError::Run(std::io::Error::other(e))),
        Err(_) => {
            eprintln!(
                "requests still running after {:.0} s; stopping them",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_matches_only_itself() {
        let expected = digest("s3cret");
        let request = |auth: Option<&str>| {
            let mut r = Request::builder().uri("/v1/models");
            if let Some(a) = auth {
                r = r.header(header::AUTHORIZATION, a);
            }
            r.body(axum::body::Body::empty()).unwrap()
        };
        assert!(has_key(&request(Some("Bearer s3cret")), &expected));
        assert!(!has_key(&request(Some("Bearer s3cret2")), &expected));
        assert!(!has_key(&request(Some("Bearer ")), &expected));
        assert!(!has_key(&request(Some("s3cret")), &expected));
        assert!(!has_key(&request(None), &expected));
    }

    #[test]
    fn only_configured_origins_get_cors() {
        assert!(cors(&[]).is_none());
        assert!(cors(&["http://localhost:3000".into()]).is_some());
    }
}
