//! `config.toml`: every setting with a default that works, overridable by flags
//! and `RAGMAP_*` environment variables. Paths are relative to the workspace
//! (the directory holding config.toml).

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid: {message}; fix it or delete it to use the defaults")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub paths: Paths,
    pub embed: Embed,
    pub chunk: Chunk,
    pub crawl: Crawl,
    pub retrieve: Retrieve,
    pub llm: Llm,
    pub server: Server,
    /// Workspace directory; set on load, not read from the file.
    #[serde(skip)]
    pub workspace: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Paths {
    pub corpus: PathBuf,
    pub index: PathBuf,
    /// Where `scripts/setup` installs onnxruntime and the model. Empty: the user cache.
    pub assets: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Embed {
    pub model_dir: Option<PathBuf>,
    pub ort_dylib: Option<PathBuf>,
    pub batch_size: usize,
    pub threads: usize,
    pub sessions: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Chunk {
    pub max_tokens: usize,
    pub overlap_tokens: usize,
}

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BlockPrivate {
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    #[default]
    Openai,
    Ollama,
}

#[derive(Debug, Clone, Deserialize)]
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
}

/// `ragmap serve`: where it listens and what it accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    pub host: String,
    pub port: u16,
    /// Name of the environment variable holding the API key clients must send
    /// as a bearer token; required to bind anything but loopback.
    pub api_key_env: String,
    /// Origins allowed to call the API from a browser (CORS); empty: none.
    pub cors_origins: Vec<String>,
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
            workers: 0,
            queue: 64,
            max_body_bytes: 1 << 20,
            max_question_chars: 4000,
            request_timeout_secs: 600.0,
            sources_footer: false,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            paths: Paths::default(),
            embed: Embed::default(),
            chunk: Chunk::default(),
            crawl: Crawl::default(),
            retrieve: Retrieve::default(),
            llm: Llm::default(),
            server: Server::default(),
            workspace: PathBuf::from("."),
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
            provider: Provider::Openai,
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
        }
    }
}

pub const CONFIG_FILE: &str = "config.toml";

impl Config {
    /// Loads `<workspace>/config.toml`, or the defaults when it does not exist.
    pub fn load(workspace: &Path) -> Result<Config, ConfigError> {
        let path = workspace.join(CONFIG_FILE);
        let mut config = match std::fs::read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| ConfigError::Invalid {
                    path: path.clone(),
                    message: "not UTF-8".into(),
                })?;
                toml::from_str::<Config>(&text).map_err(|e| ConfigError::Invalid {
                    path: path.clone(),
                    message: e.message().to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        config.workspace = workspace.to_path_buf();
        config.apply_env();
        Ok(config)
    }

    fn apply_env(&mut self) {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(v) = var("RAGMAP_ASSETS") {
            self.paths.assets = Some(v.into());
        }
        if let Some(v) = var("RAGMAP_MODEL_DIR") {
            self.embed.model_dir = Some(v.into());
        }
        if let Some(v) = var("RAGMAP_ORT_DYLIB") {
            self.embed.ort_dylib = Some(v.into());
        }
        if let Some(v) = std::env::var("RAGMAP_LLM_URL")
            .ok()
            .filter(|v| !v.is_empty())
        {
            self.llm.base_url = Some(v);
        }
        if let Some(v) = std::env::var("RAGMAP_LLM_MODEL")
            .ok()
            .filter(|v| !v.is_empty())
        {
            self.llm.model = v;
        }
        if let Ok(v) = std::env::var("RAGMAP_LLM_PROVIDER") {
            match v.to_ascii_lowercase().as_str() {
                "ollama" => self.llm.provider = Provider::Ollama,
                "openai" => self.llm.provider = Provider::Openai,
                _ => {}
            }
        }
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
            None => self.assets_dir().join("multilingual-e5-small"),
        }
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

    /// The chat endpoint's base URL, defaulting per provider (OLLAMA_HOST for Ollama).
    pub fn llm_base_url(&self) -> String {
        if let Some(u) = &self.llm.base_url {
            return u.trim_end_matches('/').to_string();
        }
        match self.llm.provider {
            Provider::Openai => "http://127.0.0.1:8080/v1".into(),
            Provider::Ollama => ollama_host_url(std::env::var("OLLAMA_HOST").ok().as_deref()),
        }
    }
}

/// `OLLAMA_HOST` may be `host`, `host:port`, or a full URL.
pub fn ollama_host_url(value: Option<&str>) -> String {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return "http://127.0.0.1:11434".into();
    };
    let with_scheme = if v.contains("://") {
        v.to_string()
    } else {
        format!("http://{v}")
    };
    let trimmed = with_scheme.trim_end_matches('/');
    let after_scheme = trimmed.split_once("://").map(|x| x.1).unwrap_or(trimmed);
    let has_port = after_scheme
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty());
    if has_port {
        trimmed.to_string()
    } else {
        format!("{trimmed}:11434")
    }
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

    #[test]
    fn ollama_host_forms() {
        assert_eq!(ollama_host_url(None), "http://127.0.0.1:11434");
        assert_eq!(ollama_host_url(Some("0.0.0.0")), "http://0.0.0.0:11434");
        assert_eq!(ollama_host_url(Some("example:1234")), "http://example:1234");
        assert_eq!(
            ollama_host_url(Some("https://h.example/")),
            "https://h.example:11434"
        );
    }
}
