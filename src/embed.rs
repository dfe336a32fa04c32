//! Local embeddings: multilingual-e5-small (ONNX) through fastembed and a
//! dynamically loaded onnxruntime, both installed by `scripts/setup`.
//!
//! fastembed panics when onnxruntime is missing or too old, so every asset is
//! checked first and reported as a one-line error naming the fix.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::OnceLock;

use fastembed::{
    InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel,
};
use rayon::prelude::*;

use crate::config::Config;

/// e5 was trained with these prefixes; without them retrieval quality drops.
const QUERY_PREFIX: &str = "query: ";
const PASSAGE_PREFIX: &str = "passage: ";
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
    #[error("cannot load the embedding model from {path}: {message}; run `bash scripts/setup` to reinstall it")]
    BadModel { path: PathBuf, message: String },
    #[error("embedding failed: {0}")]
    Run(String),
}

impl EmbedError {
    /// A failed run is a failure; anything else means set-up is missing or broken.
    pub fn exit_code(&self) -> u8 {
        match self {
            EmbedError::Run(_) => crate::exit::FAILURE,
            _ => crate::exit::SETUP,
        }
    }
}

/// Where the model's tokenizer lives (the chunker sizes chunks with it).
pub fn tokenizer_path(config: &Config) -> PathBuf {
    config.model_dir().join("tokenizer.json")
}

/// Checks that onnxruntime and every model file are present, without loading them.
pub fn check_assets(config: &Config) -> Result<(), EmbedError> {
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

/// The files whose bytes make the model's identity.
const IDENTITY_FILES: [&str; 2] = ["model.onnx", "tokenizer.json"];

/// A string that changes whenever the model's weights or tokenizer change: the
/// index stores it and rebuilds when it differs.
pub fn model_identity(config: &Config) -> Result<String, EmbedError> {
    check_assets(config)?;
    let dir = config.model_dir();
    let mut parts = Vec::new();
    for name in IDENTITY_FILES {
        let path = dir.join(name);
        parts.push(hash_file(&path).map_err(bad_model(&path))?);
    }
    Ok(format!(
        "multilingual-e5-small:{}",
        crate::corpus::content_hash(parts.join(":").as_bytes())
    ))
}

/// Size and modification time of the files [`model_identity`] hashes: while
/// they are unchanged the stored identity is reused instead of re-reading
/// 85 MB on every `ragmap index`.
pub fn model_files_stamp(config: &Config) -> Result<String, EmbedError> {
    check_assets(config)?;
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

/// An I/O error on a model file, as the error naming that file.
fn bad_model(path: &Path) -> impl FnOnce(std::io::Error) -> EmbedError + '_ {
    move |e| EmbedError::BadModel {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The process's onnxruntime environment. ort allows one per process, so it
/// is created once (loading the dylib) and shared by every session: the
/// embedder's, and any other session in the same process (the benchmarks
/// run a bare one next to it).
pub fn environment(config: &Config) -> Result<ort::environment::Environment, EmbedError> {
    static ENVIRONMENT: OnceLock<ort::environment::Environment> = OnceLock::new();
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env.clone());
    }
    check_assets(config)?;
    let dylib = config.ort_dylib();
    let bad = |message: String| EmbedError::BadRuntime {
        path: dylib.clone(),
        message,
    };
    // A library of the wrong kind may make ort panic rather than fail.
    let built = std::panic::catch_unwind(|| {
        ort::init_from(&dylib)
            .map_err(|e| e.to_string())?
            .with_name("ragmap")
            .build()
            .map_err(|e| e.to_string())
    })
    .map_err(|_| bad("the library crashed while loading".into()))?
    .map_err(bad)?;
    Ok(ENVIRONMENT.get_or_init(|| built).clone())
}

pub struct Embedder {
    /// One ONNX Runtime session per worker: on few cores, independent
    /// single-threaded sessions use the CPU better than one multi-threaded one.
    sessions: Vec<TextEmbedding>,
    batch_size: usize,
}

impl Embedder {
    /// Loads one session: enough for queries.
    pub fn load(config: &Config) -> Result<Embedder, EmbedError> {
        let environment = environment(config)?;
        let session = load_session(
            &config.model_dir(),
            read_model(config)?,
            config.embed.threads,
            &environment,
        )?;
        Ok(Embedder {
            sessions: vec![session],
            batch_size: config.embed.batch_size.max(1),
        })
    }

    /// Sessions worth having to embed `texts` passages: up to `[embed]
    /// sessions`, but a further session costs a model load (about a second),
    /// which only pays off when there are batches enough to share.
    pub fn sessions_for(config: &Config, texts: usize) -> usize {
        let batches = texts.div_ceil(config.embed.batch_size.max(1));
        config.embed.sessions.clamp(1, (batches / 8).max(1))
    }

    /// Adds sessions, loaded side by side, until there are `wanted`.
    pub fn add_sessions(&mut self, config: &Config, wanted: usize) -> Result<(), EmbedError> {
        let missing = wanted.saturating_sub(self.sessions.len());
        if missing == 0 {
            return Ok(());
        }
        // Read again rather than kept: 85 MB a query process has no use for.
        let model = read_model(config)?;
        let environment = environment(config)?;
        let dir = config.model_dir();
        let more = (0..missing)
            .into_par_iter()
            .map(|_| load_session(&dir, model.clone(), config.embed.threads, &environment))
            .collect::<Result<Vec<_>, _>>()?;
        self.sessions.extend(more);
        Ok(())
    }

    pub fn embed_query(&mut self, query: &str) -> Result<Vec<f32>, EmbedError> {
        let mut out = run(&mut self.sessions[0], &[format!("{QUERY_PREFIX}{query}")])?;
        out.pop()
            .ok_or_else(|| EmbedError::Run("no vector returned".into()))
    }

    /// Embeds queries (the `query: ` prefix) in one batch; also returns the
    /// number of tokens the model read.
    pub fn embed_queries(
        &mut self,
        queries: &[String],
    ) -> Result<(Vec<Vec<f32>>, usize), EmbedError> {
        let inputs: Vec<String> = queries
            .iter()
            .map(|q| format!("{QUERY_PREFIX}{q}"))
            .collect();
        let tokenizer = &self.sessions[0].tokenizer;
        let tokens = inputs
            .iter()
            .map(|t| {
                tokenizer
                    .encode_fast(t.as_str(), true)
                    .map_or(0, |e| e.len())
            })
            .sum();
        let mut vectors = Vec::with_capacity(inputs.len());
        for batch in inputs.chunks(self.batch_size) {
            vectors.extend(run(&mut self.sessions[0], batch)?);
        }
        Ok((vectors, tokens))
    }

    /// Embeds passages in batches of similar length (less padding, less work),
    /// returning vectors in input order. `on_batch` reports progress in texts.
    pub fn embed_passages(
        &mut self,
        texts: &[String],
        mut on_batch: impl FnMut(usize),
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let inputs: Vec<String> = texts
            .iter()
            .map(|t| format!("{PASSAGE_PREFIX}{t}"))
            .collect();
        // Batches of equal token counts need almost no padding; byte length is
        // a poor proxy when Chinese and English mix (measured in BENCHMARKS.md).
        let tokenizer = &self.sessions[0].tokenizer;
        let tokens: Vec<usize> = inputs
            .par_iter()
            .map(|t| {
                tokenizer
                    .encode_fast(t.as_str(), true)
                    .map(|e| e.len())
                    .unwrap_or(t.len())
            })
            .collect();
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| tokens[i]);
        let batches: Vec<&[usize]> = order.chunks(self.batch_size).collect();
        let embed_batch = |session: &mut TextEmbedding, batch: &[usize]| {
            let batch_inputs: Vec<&str> = batch.iter().map(|&i| inputs[i].as_str()).collect();
            run(session, &batch_inputs)
        };
        let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        let mut store = |b: usize, batch_vectors: Vec<Vec<f32>>| {
            for (&i, v) in batches[b].iter().zip(batch_vectors) {
                vectors[i] = v;
            }
            on_batch(batches[b].len());
        };
        if self.sessions.len() == 1 {
            for (b, batch) in batches.iter().enumerate() {
                store(b, embed_batch(&mut self.sessions[0], batch)?);
            }
        } else {
            // Workers take the next batch from a shared counter, so a slow batch
            // never leaves another session idle; results come back by channel.
            let next = AtomicUsize::new(0);
            let (tx, rx) = mpsc::channel();
            std::thread::scope(|scope| -> Result<(), EmbedError> {
                for session in self.sessions.iter_mut() {
                    let tx = tx.clone();
                    let (next, batches, embed_batch) = (&next, &batches, &embed_batch);
                    scope.spawn(move || loop {
                        let b = next.fetch_add(1, Ordering::Relaxed);
                        let Some(batch) = batches.get(b) else { break };
                        let result = embed_batch(session, batch).map(|v| (b, v));
                        let failed = result.is_err();
                        if tx.send(result).is_err() || failed {
                            next.store(batches.len(), Ordering::Relaxed);
                            break;
                        }
                    });
                }
                drop(tx);
                for result in rx {
                    let (b, batch_vectors) = result?;
                    store(b, batch_vectors);
                }
                Ok(())
            })?;
        }
        Ok(vectors)
    }
}

/// The model and tokenizer files, read once for every session.
fn read_model(config: &Config) -> Result<UserDefinedEmbeddingModel, EmbedError> {
    let dir = config.model_dir();
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read(&path).map_err(bad_model(&path))
    };
    Ok(UserDefinedEmbeddingModel::new(
        read("model.onnx")?,
        TokenizerFiles {
            tokenizer_file: read("tokenizer.json")?,
            config_file: read("config.json")?,
            special_tokens_map_file: read("special_tokens_map.json")?,
            tokenizer_config_file: read("tokenizer_config.json")?,
        },
    )
    .with_pooling(Pooling::Mean))
}

fn load_session(
    dir: &Path,
    model: UserDefinedEmbeddingModel,
    threads: usize,
    environment: &ort::environment::Environment,
) -> Result<TextEmbedding, EmbedError> {
    let options = InitOptionsUserDefined::new()
        .with_max_length(512)
        .with_intra_threads(threads.max(1))
        .with_environment(environment.clone());
    // fastembed and ort may panic on inputs they do not expect; a bad model
    // file must still end in a message, not a backtrace.
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        TextEmbedding::try_new_from_user_defined(model, options)
    }));
    match loaded {
        Ok(Ok(model)) => Ok(model),
        Ok(Err(e)) => Err(EmbedError::BadModel {
            path: dir.to_path_buf(),
            message: first_line(&e.to_string()),
        }),
        Err(_) => Err(EmbedError::BadModel {
            path: dir.to_path_buf(),
            message: "the model loader crashed".into(),
        }),
    }
}

fn run<S: AsRef<str> + Send + Sync>(
    session: &mut TextEmbedding,
    inputs: &[S],
) -> Result<Vec<Vec<f32>>, EmbedError> {
    let n = inputs.len();
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        session.embed(inputs, Some(n))
    }))
    .map_err(|_| EmbedError::Run("the embedding runtime crashed".into()))?
    .map_err(|e| EmbedError::Run(first_line(&e.to_string())))?;
    if out.len() != n {
        return Err(EmbedError::Run(format!(
            "expected {n} vectors, got {}",
            out.len()
        )));
    }
    Ok(out)
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}
