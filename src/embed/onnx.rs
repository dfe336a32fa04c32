//! Local embeddings: multilingual-e5-small (ONNX) on a dynamically loaded
//! onnxruntime, both installed by `scripts/setup`: tokenize (ragmap's fast
//! tokenizer, see `tokenizer`), run the session, mean-pool over the attention
//! mask, L2-normalise — what fastembed did, without its per-session tokenizer.
//!
//! ort may panic when onnxruntime is missing or too old, so every asset is
//! checked first (`super::check_local_assets`) and reported as a one-line error naming the fix.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};

use ort::session::builder::{GraphOptimizationLevel, PrepackedWeights};
use ort::session::Session;
use rayon::prelude::*;

use super::{
    check_local_assets, first_line, load_tokenizer, timed, EmbedError, PASSAGE_PREFIX, QUERY_PREFIX,
};
use crate::config::Config;
use crate::tokenizer::{self, Tokenizer};

/// The process's onnxruntime environment. ort allows one per process, so it
/// is created once (loading the dylib) and shared by every session: the
/// embedder's, and any other session in the same process (the benchmarks
/// run a bare one next to it).
pub fn environment(config: &Config) -> Result<ort::environment::Environment, EmbedError> {
    static ENVIRONMENT: OnceLock<ort::environment::Environment> = OnceLock::new();
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env.clone());
    }
    check_local_assets(config)?;
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

/// The longest input the model reads, in tokens (special tokens included).
pub(super) const MAX_LENGTH: usize = 512;

pub struct Onnx {
    /// One tokenizer for every session: the pieces are shared, only the
    /// padding and truncation settings are the model's.
    tokenizer: Arc<Tokenizer>,
    /// One ONNX Runtime session per worker: on few cores, independent
    /// single-threaded sessions use the CPU better than one multi-threaded one.
    sessions: Vec<Session>,
    /// Weights prepacked by the first session, reused by the others.
    prepacked: PrepackedWeights,
    shape: ModelShape,
    batch_size: usize,
}

/// What the model's inputs and outputs are called.
#[derive(Clone)]
struct ModelShape {
    needs_token_types: bool,
    output: String,
}

impl Onnx {
    /// Loads one session (enough for queries) and the tokenizer, side by side.
    pub fn load(config: &Config) -> Result<Onnx, EmbedError> {
        let environment = environment(config)?;
        let prepacked = PrepackedWeights::new();
        let (session, base) = std::thread::scope(|scope| {
            let tokenizer = scope.spawn(|| load_tokenizer(config));
            let session = timed("onnx session", || {
                load_session(config, &environment, &prepacked)
            });
            let base = tokenizer
                .join()
                .unwrap_or_else(|_| Err(EmbedError::Run("loading the tokenizer panicked".into())));
            (session, base)
        });
        Onnx::from_parts(config, &base?, session?, prepacked)
    }

    /// One session created now, ready for [`Onnx::from_parts`]: `ragmap
    /// index` loads it while it tokenizes the corpus with the same tokenizer.
    pub fn load_first_session(config: &Config) -> Result<(Session, PrepackedWeights), EmbedError> {
        let environment = environment(config)?;
        let prepacked = PrepackedWeights::new();
        let session = timed("onnx session", || {
            load_session(config, &environment, &prepacked)
        })?;
        Ok((session, prepacked))
    }

    /// An embedder of `session` with the model's configuration of `base`
    /// (the tokenizer as `tokenizer.json` defines it).
    pub fn from_parts(
        config: &Config,
        base: &Tokenizer,
        session: Session,
        prepacked: PrepackedWeights,
    ) -> Result<Onnx, EmbedError> {
        let tokenizer = tokenizer::for_model(base, &config.model_dir(), MAX_LENGTH)?;
        let shape = ModelShape::of(&session, &config.model_dir())?;
        Ok(Onnx {
            tokenizer: Arc::new(tokenizer),
            sessions: vec![session],
            prepacked,
            shape,
            batch_size: config.embed.batch_size.max(1),
        })
    }

    /// Adds sessions, loaded side by side, until there are `wanted`.
    pub fn add_sessions(&mut self, config: &Config, wanted: usize) -> Result<(), EmbedError> {
        let missing = wanted.saturating_sub(self.sessions.len());
        if missing == 0 {
            return Ok(());
        }
        let environment = environment(config)?;
        let prepacked = &self.prepacked;
        let more = (0..missing)
            .into_par_iter()
            .map(|_| load_session(config, &environment, prepacked))
            .collect::<Result<Vec<_>, _>>()?;
        self.sessions.extend(more);
        Ok(())
    }

    /// Embeds texts as what they are (e5's `query: ` or `passage: ` prefix),
    /// in batches of `batch_size` of similar lengths (a batch is padded to its
    /// longest: a server's client may send any mix), returned in input order;
    /// also returns the number of tokens the model read.
    pub fn embed_as(
        &mut self,
        texts: &[String],
        passages: bool,
    ) -> Result<(Vec<Vec<f32>>, usize), EmbedError> {
        let prefix = if passages {
            PASSAGE_PREFIX
        } else {
            QUERY_PREFIX
        };
        let inputs: Vec<String> = texts.iter().map(|t| format!("{prefix}{t}")).collect();
        let lengths: Vec<usize> = inputs
            .iter()
            .map(|t| {
                self.tokenizer
                    .encode_fast(t.as_str(), true)
                    .map_or(0, |e| e.len())
            })
            .collect();
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.sort_by_key(|&i| lengths[i]);
        let mut vectors = vec![Vec::new(); inputs.len()];
        for batch in order.chunks(self.batch_size) {
            let batch_inputs: Vec<&str> = batch.iter().map(|&i| inputs[i].as_str()).collect();
            let batch_vectors = run(
                &mut self.sessions[0],
                &self.tokenizer,
                &self.shape,
                &batch_inputs,
            )?;
            for (&i, v) in batch.iter().zip(batch_vectors) {
                vectors[i] = v;
            }
        }
        Ok((vectors, lengths.iter().sum()))
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
        let tokenizer = &self.tokenizer;
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
        // A few passages are still shared by every session (a watcher's run).
        let per_batch = texts.len().div_ceil(self.sessions.len()).max(1);
        let batches: Vec<&[usize]> = order.chunks(self.batch_size.min(per_batch)).collect();
        let shape = &self.shape;
        let embed_batch = |session: &mut Session, batch: &[usize]| {
            let batch_inputs: Vec<&str> = batch.iter().map(|&i| inputs[i].as_str()).collect();
            run(session, tokenizer, shape, &batch_inputs)
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

impl ModelShape {
    /// The inputs the graph declares and its embedding output, in
    /// fastembed's order of preference.
    fn of(session: &Session, dir: &Path) -> Result<ModelShape, EmbedError> {
        let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        let output = match outputs.as_slice() {
            [only] => only.to_string(),
            _ => ["text_embeds", "last_hidden_state", "sentence_embedding"]
                .into_iter()
                .find(|name| outputs.contains(name))
                .ok_or_else(|| EmbedError::BadModel {
                    path: dir.join("model.onnx"),
                    message: format!("no embedding output among {outputs:?}"),
                })?
                .to_string(),
        };
        Ok(ModelShape {
            needs_token_types: session
                .inputs()
                .iter()
                .any(|input| input.name() == "token_type_ids"),
            output,
        })
    }
}

/// One ONNX Runtime session over `model.onnx`, with `[embed]`'s threads and
/// memory settings; weights another session already prepacked are shared.
fn load_session(
    config: &Config,
    environment: &ort::environment::Environment,
    prepacked: &PrepackedWeights,
) -> Result<Session, EmbedError> {
    let path = config.model_dir().join("model.onnx");
    let bad = |message: String| EmbedError::BadModel {
        path: path.clone(),
        message: first_line(&message),
    };
    let settings = &config.embed;
    // ort may panic on a library or file it does not expect; a bad model
    // file must still end in a message, not a backtrace.
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let builder = Session::builder(environment).map_err(|e| e.to_string())?;
        let cpu = ort::ep::CPU::default()
            .with_arena_allocator(settings.arena)
            .build();
        let message = |e: ort::Error<_>| e.to_string();
        builder
            .with_execution_providers([cpu])
            .map_err(message)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(message)?
            .with_intra_threads(settings.threads.max(1))
            .map_err(message)?
            .with_memory_pattern(settings.memory_pattern)
            .map_err(message)?
            .with_prepacked_weights(prepacked)
            .map_err(message)?
            .commit_from_file(&path)
            .map_err(|e| e.to_string())
    }));
    match built {
        Ok(Ok(session)) => Ok(session),
        Ok(Err(message)) => Err(bad(message)),
        Err(_) => Err(bad("the model loader crashed".into())),
    }
}

/// Tokenizes `inputs` into one padded batch, runs it, and returns one
/// L2-normalised mean-pooled vector per input, in order.
fn run(
    session: &mut Session,
    tokenizer: &Tokenizer,
    shape: &ModelShape,
    inputs: &[&str],
) -> Result<Vec<Vec<f32>>, EmbedError> {
    let n = inputs.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    // One input after another on this thread, padded as `encode_batch` pads:
    // `encode_batch` runs on rayon's pool, whose idle threads spin and took
    // 15 % more CPU from the ONNX sessions while indexing (docs/startup.md).
    let failed = |e: tokenizers::Error| EmbedError::Run(first_line(&e.to_string()));
    let mut encodings = inputs
        .iter()
        .map(|&text| tokenizer.encode_fast(text, true))
        .collect::<Result<Vec<_>, _>>()
        .map_err(failed)?;
    if let Some(padding) = tokenizer.get_padding() {
        tokenizers::pad_encodings(&mut encodings, padding).map_err(failed)?;
    }
    let len = encodings.first().map_or(0, |e| e.len());
    if encodings.iter().any(|e| e.len() != len) {
        return Err(EmbedError::Run("a batch came back unpadded".into()));
    }
    let mut ids = Vec::with_capacity(n * len);
    let mut mask = Vec::with_capacity(n * len);
    let mut types = Vec::with_capacity(n * len);
    for e in &encodings {
        ids.extend(e.get_ids().iter().map(|&x| x as i64));
        mask.extend(e.get_attention_mask().iter().map(|&x| x as i64));
        types.extend(e.get_type_ids().iter().map(|&x| x as i64));
    }
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
        || -> Result<Vec<Vec<f32>>, String> {
            let dims = [n, len];
            let outputs = if shape.needs_token_types {
                session.run(ort::inputs![
                    "input_ids" => tensor(dims, &ids)?,
                    "attention_mask" => tensor(dims, &mask)?,
                    "token_type_ids" => tensor(dims, &types)?,
                ])
            } else {
                session.run(ort::inputs![
                    "input_ids" => tensor(dims, &ids)?,
                    "attention_mask" => tensor(dims, &mask)?,
                ])
            }
            .map_err(|e| e.to_string())?;
            let (out_shape, hidden) = outputs[shape.output.as_str()]
                .try_extract_tensor::<f32>()
                .map_err(|e| e.to_string())?;
            pool(out_shape, hidden, &mask, n, len)
        },
    ))
    .map_err(|_| EmbedError::Run("the embedding runtime crashed".into()))?
    .map_err(|e| EmbedError::Run(first_line(&e)))?;
    if out.len() != n {
        return Err(EmbedError::Run(format!(
            "expected {n} vectors, got {}",
            out.len()
        )));
    }
    Ok(out)
}

fn tensor(dims: [usize; 2], data: &[i64]) -> Result<ort::value::TensorRef<'_, i64>, String> {
    ort::value::TensorRef::from_array_view((dims, data)).map_err(|e| e.to_string())
}

/// Mean over the unmasked tokens (a 2-D output is already pooled), then L2
/// normalisation, in fastembed's order of operations so vectors are the same
/// to the bit.
fn pool(
    shape: &[i64],
    hidden: &[f32],
    mask: &[i64],
    rows: usize,
    len: usize,
) -> Result<Vec<Vec<f32>>, String> {
    let normalize = |v: Vec<f32>| {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / (norm + 1e-12)).collect::<Vec<f32>>()
    };
    match *shape {
        [r, dim] if r as usize == rows && hidden.len() == rows * dim as usize => Ok(hidden
            .chunks_exact(dim as usize)
            .map(|row| normalize(row.to_vec()))
            .collect()),
        [r, l, dim] if r as usize == rows && l as usize == len => {
            let dim = dim as usize;
            if hidden.len() != rows * len * dim {
                return Err(format!(
                    "output of shape {shape:?} has {} values",
                    hidden.len()
                ));
            }
            Ok((0..rows)
                .map(|r| {
                    let mut sum = vec![0f32; dim];
                    let mut count = 0f32;
                    for t in 0..len {
                        if mask[r * len + t] == 0 {
                            continue;
                        }
                        count += mask[r * len + t] as f32;
                        let token = &hidden[(r * len + t) * dim..(r * len + t + 1) * dim];
                        for (acc, x) in sum.iter_mut().zip(token) {
                            *acc += x;
                        }
                    }
                    let count = if count == 0.0 { 1.0 } else { count };
                    normalize(sum.into_iter().map(|x| x / count).collect())
                })
                .collect())
        }
        _ => Err(format!(
            "unexpected output shape {shape:?} for {rows} inputs of {len} tokens"
        )),
    }
}
