//! Local embeddings: multilingual-e5-small (ONNX) through fastembed and a
//! dynamically loaded onnxruntime, both installed by `scripts/setup`.
//!
//! fastembed panics when onnxruntime is missing or too old, so every asset is
//! checked first and reported as a one-line error naming the fix.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fastembed::{
    InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel,
};

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

/// A string that changes whenever the model's weights or tokenizer change: the
/// index stores it and rebuilds when it differs.
pub fn model_identity(config: &Config) -> Result<String, EmbedError> {
    check_assets(config)?;
    let dir = config.model_dir();
    let mut parts = Vec::new();
    for name in ["model.onnx", "tokenizer.json"] {
        let path = dir.join(name);
        parts.push(hash_file(&path).map_err(|e| EmbedError::BadModel {
            path: path.clone(),
            message: e.to_string(),
        })?);
    }
    Ok(format!(
        "multilingual-e5-small:{}",
        crate::corpus::content_hash(parts.join(":").as_bytes())
    ))
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
    model: TextEmbedding,
    batch_size: usize,
}

impl Embedder {
    pub fn load(config: &Config) -> Result<Embedder, EmbedError> {
        let environment = environment(config)?;
        let dir = config.model_dir();
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read(&path).map_err(|e| EmbedError::BadModel {
                path,
                message: e.to_string(),
            })
        };
        let tokenizer_files = TokenizerFiles {
            tokenizer_file: read("tokenizer.json")?,
            config_file: read("config.json")?,
            special_tokens_map_file: read("special_tokens_map.json")?,
            tokenizer_config_file: read("tokenizer_config.json")?,
        };
        let model = UserDefinedEmbeddingModel::new(read("model.onnx")?, tokenizer_files)
            .with_pooling(Pooling::Mean);
        let options = InitOptionsUserDefined::new()
            .with_max_length(512)
            .with_intra_threads(config.embed.threads.max(1))
            .with_environment(environment);
        // fastembed and ort may panic on inputs they do not expect; a bad model
        // file must still end in a message, not a backtrace.
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            TextEmbedding::try_new_from_user_defined(model, options)
        }));
        let model = match loaded {
            Ok(Ok(model)) => model,
            Ok(Err(e)) => {
                return Err(EmbedError::BadModel {
                    path: dir,
                    message: first_line(&e.to_string()),
                })
            }
            Err(_) => {
                return Err(EmbedError::BadModel {
                    path: dir,
                    message: "the model loader crashed".into(),
                })
            }
        };
        Ok(Embedder {
            model,
            batch_size: config.embed.batch_size.max(1),
        })
    }

    pub fn embed_query(&mut self, query: &str) -> Result<Vec<f32>, EmbedError> {
        let mut out = self.run(&[format!("{QUERY_PREFIX}{query}")])?;
        out.pop()
            .ok_or_else(|| EmbedError::Run("no vector returned".into()))
    }

    /// Embeds passages in batches of similar token counts (a batch is padded
    /// to its longest member, so this is the least work), returning vectors
    /// in input order. `on_batch` reports progress in texts.
    ///
    /// Lengths are counted in tokens, not bytes: a Chinese character is three
    /// bytes and about one token, an English word four to six bytes and one
    /// or two tokens, so byte-sorted batches of a mixed corpus padded ~21 %
    /// of their tokens against ~3 % token-sorted, and ran ~25 % slower
    /// (BENCHMARKS.md). Counting costs one extra tokenization, well under 1 %
    /// of the model's time.
    pub fn embed_passages(
        &mut self,
        texts: &[String],
        mut on_batch: impl FnMut(usize),
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let inputs: Vec<String> = texts
            .iter()
            .map(|t| format!("{PASSAGE_PREFIX}{t}"))
            .collect();
        let tokens: Vec<usize> = inputs
            .iter()
            .map(|t| {
                self.model
                    .tokenizer
                    .encode_fast(t.as_str(), true)
                    .map(|e| e.len())
                    .unwrap_or(t.len())
            })
            .collect();
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| tokens[i]);
        let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for batch in order.chunks(self.batch_size) {
            let batch_inputs: Vec<&str> = batch.iter().map(|&i| inputs[i].as_str()).collect();
            for (&i, v) in batch.iter().zip(self.run(&batch_inputs)?) {
                vectors[i] = v;
            }
            on_batch(batch.len());
        }
        Ok(vectors)
    }

    fn run<S: AsRef<str> + Send + Sync>(
        &mut self,
        inputs: &[S],
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let n = inputs.len();
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.model.embed(inputs, Some(n))
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
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}
