//! Embeddings: one face ([`Embedder`]) over the two ways ragmap embeds text —
//! the local multilingual-e5-small on onnxruntime ([`onnx`], the default,
//! installed by `scripts/setup`), or any OpenAI-compatible `POST
//! /v1/embeddings` named by `[embed] base_url` ([`remote`]). Indexing,
//! retrieval and the server call the face and never branch on which it is.
//!
//! An index records the model's name and dimension (and, for the local model,
//! a hash of its files) and refuses vectors of another model: see
//! [`same_model`] for what "the same model" means.

mod cache;
pub mod onnx;
pub mod remote;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::config::{Config, EMBEDDING_MODEL};
use crate::tokenizer::{self, Tokenizer, TokenizerError};

pub use onnx::environment;

/// e5 was trained with these prefixes; without them retrieval quality drops.
pub const QUERY_PREFIX: &str = "query: ";
pub const PASSAGE_PREFIX: &str = "passage: ";
const MODEL_FILES: [&str; 5] = [
    "model.onnx",
    "tokenizer.json",
    "config.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
];

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("onnxruntime not found at {0}; run `bash scripts/setup` (or set RAGMAP_ORT_DYLIB)")]
    MissingRuntime(PathBuf),
    #[error("cannot load onnxruntime {path}: {message}; run `bash scripts/setup` to install onnxruntime 1.24")]
    BadRuntime { path: PathBuf, message: String },
    #[error(
        "embedding model file {0} not found; run `bash scripts/setup` (or set RAGMAP_MODEL_DIR)"
    )]
    MissingModel(PathBuf),
    #[error("{0} not found: chunks are sized with the embedding model's tokenizer, also when [embed] base_url embeds remotely; run `bash scripts/setup --tokenizer` (or set [embed] model_dir to a folder holding the model's tokenizer.json)")]
    MissingTokenizer(PathBuf),
    #[error("cannot load the embedding model from {path}: {message}; run `bash scripts/setup` to reinstall it")]
    BadModel { path: PathBuf, message: String },
    #[error("embedding failed: {0}")]
    Run(String),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// `[embed] base_url` cannot be used as it is written.
    #[error("[embed] base_url {url:?} {problem}; fix it (e.g. http://127.0.0.1:8080/v1) or unset it to embed locally")]
    BadUrl { url: String, problem: String },
    /// The embedding server failed (after its retries): nothing was committed.
    #[error("the embedding server at {server} {problem}; {fix}")]
    Server {
        server: String,
        problem: String,
        fix: String,
    },
    /// The server's vectors do not have the dimension the index holds.
    #[error("the embedding server at {server} returns {got}-dimension vectors for model {model:?}, but the index holds {expected}-dimension ones; point [embed] base_url and model at the model the index was built with, or run `ragmap index --rebuild` to re-embed everything")]
    Dimensions {
        server: String,
        model: String,
        got: usize,
        expected: usize,
    },
}

impl EmbedError {
    /// A failed run is a failure; a failing embedding server has its own code;
    /// vectors the index cannot hold mean the index does not fit; anything
    /// else means set-up is missing or broken.
    pub fn exit_code(&self) -> u8 {
        match self {
            EmbedError::Run(_) => crate::exit::FAILURE,
            EmbedError::Server { .. } => crate::exit::EMBED_SERVER,
            EmbedError::Dimensions { .. } => crate::exit::INDEX,
            EmbedError::BadUrl { .. } => crate::exit::FAILURE,
            _ => crate::exit::SETUP,
        }
    }
}

/// Where the model's tokenizer lives (the chunker sizes chunks with it).
pub fn tokenizer_path(config: &Config) -> PathBuf {
    config.model_dir().join("tokenizer.json")
}

/// Checks that what embedding needs on this machine is present, without
/// loading it: onnxruntime and every model file for the local model; the
/// tokenizer alone when `[embed] base_url` embeds remotely (chunking needs it).
pub fn check_assets(config: &Config) -> Result<(), EmbedError> {
    if config.embed_base_url().is_some() {
        return check_tokenizer(config);
    }
    check_local_assets(config)
}

/// onnxruntime and every file of the local model.
pub fn check_local_assets(config: &Config) -> Result<(), EmbedError> {
    let dylib = config.ort_dylib();
    if !dylib.is_file() {
        return Err(EmbedError::MissingRuntime(dylib));
    }
    let dir = config.model_dir();
    for name in MODEL_FILES {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(EmbedError::MissingModel(path));
        }
    }
    Ok(())
}

/// The tokenizer chunking sizes chunks with.
pub fn check_tokenizer(config: &Config) -> Result<(), EmbedError> {
    let path = tokenizer_path(config);
    match path.is_file() {
        true => Ok(()),
        false => Err(EmbedError::MissingTokenizer(path)),
    }
}

/// The name an index records for the model `config` embeds with: the local
/// model's, or `[embed] model` for a remote one.
pub fn model_name(config: &Config) -> String {
    match config.embed_base_url() {
        Some(_) => config.embed.model.trim().to_string(),
        None => EMBEDDING_MODEL.to_string(),
    }
}

/// Whether two recorded model names name the same model: equal but for case
/// and an `owner/` prefix, so `intfloat/multilingual-e5-small` (a server's
/// name for the weights) is the local `multilingual-e5-small`. The vectors'
/// dimension is compared beside it; the local model's file hash only decides
/// between two local builds (see `index::build`).
pub fn same_model(a: &str, b: &str) -> bool {
    let short = |name: &str| {
        let name = name.trim();
        name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase()
    };
    short(a) == short(b)
}

/// The files whose bytes make the local model's identity.
const IDENTITY_FILES: [&str; 2] = ["model.onnx", "tokenizer.json"];

/// A hash that changes whenever the local model's weights or tokenizer
/// change: the index stores it and rebuilds when it differs.
pub fn model_files_hash(config: &Config) -> Result<String, EmbedError> {
    check_local_assets(config)?;
    let dir = config.model_dir();
    let mut parts = Vec::new();
    for name in IDENTITY_FILES {
        let path = dir.join(name);
        parts.push(hex::encode(
            tokenizer::hash_file(&path).map_err(bad_model(&path))?,
        ));
    }
    Ok(crate::corpus::content_hash(parts.join(":").as_bytes()))
}

/// Size and modification time of the files [`model_files_hash`] hashes:
/// while they are unchanged the stored hash is reused instead of re-reading
/// 85 MB on every `ragmap index`.
pub fn model_files_stamp(config: &Config) -> Result<String, EmbedError> {
    check_local_assets(config)?;
    let dir = config.model_dir();
    let mut parts = Vec::new();
    for name in IDENTITY_FILES {
        let path = dir.join(name);
        let meta = fs::metadata(&path).map_err(bad_model(&path))?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        parts.push(format!("{name}:{}:{modified}", meta.len()));
    }
    Ok(parts.join(";"))
}

/// The local model's vector length (`hidden_size` of its config.json).
pub fn local_dimensions(config: &Config) -> Result<usize, EmbedError> {
    let path = config.model_dir().join("config.json");
    let text = fs::read_to_string(&path).map_err(bad_model(&path))?;
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["hidden_size"].as_u64())
        .filter(|&d| d > 0)
        .map(|d| d as usize)
        .ok_or_else(|| EmbedError::BadModel {
            path,
            message: "no \"hidden_size\"".into(),
        })
}

/// An I/O error on a model file, as the error naming that file.
fn bad_model(path: &Path) -> impl FnOnce(std::io::Error) -> EmbedError + '_ {
    move |e| EmbedError::BadModel {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Local embedding sessions worth loading to embed `texts` passages: up to
/// `[embed] sessions`, but a further session costs a model load (a fraction
/// of a second), which only pays off when there are batches enough to share.
pub fn sessions_for(config: &Config, texts: usize) -> usize {
    let batches = texts.div_ceil(config.embed.batch_size.max(1));
    config.embed.sessions.clamp(1, (batches / 8).max(1))
}

/// `tokenizer.json` as the model directory holds it (from the cache when it matches).
pub fn load_tokenizer(config: &Config) -> Result<Tokenizer, EmbedError> {
    check_tokenizer(config)?;
    Ok(timed("tokenizer", || {
        tokenizer::load(&tokenizer_path(config))
    })?)
}

/// Embeds questions and passages, locally or through a server: what every
/// caller holds.
pub enum Embedder {
    Local(onnx::Onnx),
    /// Boxed: the client with its runtime is several times the local face's size.
    Remote(Box<remote::Remote>),
}

/// An embedder on its way: the local model's first session loading (while
/// `ragmap index` splits the corpus with the same tokenizer), or a remote
/// client, ready at once.
pub enum Loading {
    Local(
        ort::session::Session,
        ort::session::builder::PrepackedWeights,
    ),
    Remote(Box<remote::Remote>),
}

impl Embedder {
    /// The embedder `config` names, ready for questions (one local session).
    pub fn load(config: &Config) -> Result<Embedder, EmbedError> {
        match config.embed_base_url() {
            Some(_) => Ok(Embedder::Remote(Box::new(remote::Remote::new(
                config, None,
            )?))),
            None => Ok(Embedder::Local(onnx::Onnx::load(config)?)),
        }
    }

    /// Starts loading what [`Loading::finish`] completes.
    pub fn begin(config: &Config) -> Result<Loading, EmbedError> {
        match config.embed_base_url() {
            Some(_) => Ok(Loading::Remote(Box::new(remote::Remote::new(
                config, None,
            )?))),
            None => {
                let (session, prepacked) = onnx::Onnx::load_first_session(config)?;
                Ok(Loading::Local(session, prepacked))
            }
        }
    }

    /// Gets ready to embed passages on `sessions` sessions of the local
    /// model (see [`sessions_for`]); a remote client needs nothing.
    pub fn prepare(&mut self, config: &Config, sessions: usize) -> Result<(), EmbedError> {
        match self {
            Embedder::Local(onnx) => onnx.add_sessions(config, sessions),
            Embedder::Remote(_) => Ok(()),
        }
    }

    /// The name the index records for this model (see [`model_name`]).
    pub fn model(&self) -> &str {
        match self {
            Embedder::Local(_) => EMBEDDING_MODEL,
            Embedder::Remote(remote) => remote.model(),
        }
    }

    /// The server's embeddings URL, for a remote model.
    pub fn server(&self) -> Option<&str> {
        match self {
            Embedder::Local(_) => None,
            Embedder::Remote(remote) => Some(remote.url()),
        }
    }

    /// Vectors of another dimension than `dimensions` are an error from now
    /// on (the index's, checked as the first ones arrive instead of after a
    /// whole run).
    pub fn expect_dimensions(&mut self, dimensions: Option<usize>) {
        if let Embedder::Remote(remote) = self {
            remote.expect_dimensions(dimensions);
        }
    }

    pub fn embed_query(&mut self, query: &str) -> Result<Vec<f32>, EmbedError> {
        let (mut vectors, _) = self.embed_as(&[query.to_string()], false)?;
        vectors
            .pop()
            .ok_or_else(|| EmbedError::Run("no vector returned".into()))
    }

    /// Embeds texts as what they are (e5's `query: ` or `passage: `), in
    /// input order; also returns the number of tokens the model read (as the
    /// server reports it, for a remote one).
    pub fn embed_as(
        &mut self,
        texts: &[String],
        passages: bool,
    ) -> Result<(Vec<Vec<f32>>, usize), EmbedError> {
        match self {
            Embedder::Local(onnx) => onnx.embed_as(texts, passages),
            Embedder::Remote(remote) => remote.embed_as(texts, passages),
        }
    }

    /// Embeds passages for the index, returning vectors in input order;
    /// `on_batch` reports progress in texts.
    pub fn embed_passages(
        &mut self,
        texts: &[String],
        on_batch: impl FnMut(usize),
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        match self {
            Embedder::Local(onnx) => onnx.embed_passages(texts, on_batch),
            Embedder::Remote(remote) => remote.embed_passages(texts, on_batch),
        }
    }

    /// After the index committed what [`Embedder::embed_passages`] returned:
    /// the vectors a remote run kept for resuming are no longer needed.
    pub fn committed(&mut self) {
        if let Embedder::Remote(remote) = self {
            remote.forget_kept();
        }
    }
}

impl Loading {
    /// The embedder; the local model is configured with the tokenizer
    /// `base`, and a remote one orders passages by their tokens under it.
    pub fn finish(self, config: &Config, base: &Tokenizer) -> Result<Embedder, EmbedError> {
        match self {
            Loading::Local(session, prepacked) => Ok(Embedder::Local(onnx::Onnx::from_parts(
                config, base, session, prepacked,
            )?)),
            Loading::Remote(mut remote) => {
                remote.count_tokens_with(base);
                Ok(Embedder::Remote(remote))
            }
        }
    }
}

pub(crate) fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

/// Runs `f`, and with `RAGMAP_TIMINGS=1` prints how long it took to stderr
/// (`scripts/bench` reads these lines to time each load step).
pub fn timed<T>(step: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    if std::env::var_os("RAGMAP_TIMINGS").is_some_and(|v| v == "1") {
        eprintln!(
            "timing: {step} {:.1} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    out
}
