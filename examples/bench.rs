//! In-process measurements for `scripts/bench` (which runs this in release
//! mode and writes BENCHMARKS.md). Each subcommand prints one JSON object.
//!
//! - `embed`: ragmap's embedding stage (`Embedder::embed_passages` on real
//!   chunk texts) against a bare ONNX Runtime session on the same model, the
//!   same dylib, the same intra-op threads and the same token batches,
//!   alternating in rounds so machine noise hits both alike.
//! - `latency`: in-process retrieval over synthetic indexes of 1k/10k/100k
//!   chunks (real corpus text windows, random unit vectors), per mode, query
//!   embedding excluded (it is timed separately when the model is installed).
//! - `startup`: each load step of a one-shot `ragmap search` (tokenizer,
//!   ONNX session, SQLite, HNSW view, jieba), wall time and memory.
//! - `recall`: ragmap's own per-document Recall@5 on a question set, for
//!   comparison with the Python pipeline's.
//! - `scoped`: the index run `--watch` makes after an edit (only the changed
//!   file read) against a full scan after the same kind of edit, alternating.
//! - `synthetic`: one synthetic index, its vectors drawn between a real
//!   index's (for nearest-neighbour recall at sizes nothing real reaches here).
//! - `backends`: a workspace's embedded index beside its copy in PostgreSQL:
//!   retrieval latency per mode, interleaved, and each backend's vector
//!   recall@10 against an exact scan.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use ragmap::chunk::{self, Chunker};
use ragmap::config::{Config, Retrieve, RetrieveMode};
use ragmap::corpus;
use ragmap::embed::{self, Embedder};
use ragmap::eval;
use ragmap::index::embedded::Embedded;
use ragmap::index::store::Store;
use ragmap::index::vectors::Vectors;

/// The synthetic indexes' vector length: multilingual-e5-small's.
const DIMENSIONS: usize = 384;
use ragmap::index::{terms, NewChunk, NewDocument};
use ragmap::retrieve;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Embedding stage vs a bare ONNX Runtime session (tokens/s, ratio).
    Embed {
        /// Workspace (config.toml + corpus/).
        #[arg(long)]
        workspace: PathBuf,
        /// Rounds; each runs ragmap, then the bare session on the same batches.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Chunks embedded per round, taken evenly across the corpus (0: all).
        #[arg(long, default_value_t = 160)]
        chunks: usize,
    },
    /// In-process retrieval latency over synthetic indexes.
    Latency(LatencyArgs),
    /// One process answering many consecutive searches on one synthetic index:
    /// latency and resident memory at the start and at the end (a leak or a
    /// slowdown shows as a difference).
    Soak {
        #[arg(long)]
        corpus: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        size: usize,
        #[arg(long, default_value_t = 1000)]
        searches: usize,
        #[arg(long)]
        queries: Option<PathBuf>,
        /// Where the synthetic index is built (reused when already there).
        #[arg(long)]
        scratch: PathBuf,
    },
    /// Each load step of a one-shot search, timed one after another.
    Startup {
        /// Workspace (config.toml + an indexed corpus).
        #[arg(long)]
        workspace: PathBuf,
        #[arg(long, default_value = "RAG 和微调有什么区别")]
        query: String,
    },
    /// Index runs reading only the edited file (as `--watch` does) against
    /// full scans, alternating, each after a one-paragraph edit of a page.
    Scoped {
        /// Workspace (config.toml + an indexed corpus).
        #[arg(long)]
        workspace: PathBuf,
        /// Rounds; each runs one of each, in alternating order.
        #[arg(long, default_value_t = 8)]
        rounds: usize,
    },
    /// One synthetic index in `dir` (as `latency` builds them), its vectors
    /// between pairs of the real ones of `like`'s index when given.
    Synthetic {
        #[arg(long)]
        corpus: PathBuf,
        #[arg(long)]
        size: usize,
        #[arg(long)]
        dir: PathBuf,
        /// A workspace with a built embedded index whose vectors to draw between.
        #[arg(long)]
        like: Option<PathBuf>,
    },
    /// The embedded index of a workspace beside its copy in PostgreSQL.
    Backends {
        /// Workspace (config.toml + its embedded index).
        #[arg(long)]
        workspace: PathBuf,
        /// The database holding a copy (`ragmap index --to URL`).
        #[arg(long)]
        url: String,
        /// Questions (JSON lines with a "question" field).
        #[arg(long)]
        queries: PathBuf,
        /// Timed searches per mode and backend.
        #[arg(long, default_value_t = 300)]
        searches: usize,
        /// pgvector `hnsw.ef_search` values to compare (recall@10 and latency
        /// of each beside the embedded index), besides the workspace's own.
        #[arg(long, value_delimiter = ',')]
        ef_search: Vec<usize>,
        /// usearch `expansion_search` values to compare on the embedded index
        /// (each beside the default one).
        #[arg(long, value_delimiter = ',')]
        expansion: Vec<usize>,
    },
    /// ragmap's per-document Recall@5 on a question set, over a built index.
    Recall {
        #[arg(long)]
        workspace: PathBuf,
        #[arg(long)]
        questions: PathBuf,
        #[arg(long, default_value_t = 5)]
        k: usize,
    },
}

fn main() -> Result<()> {
    let out = match Cli::parse().command {
        Command::Embed {
            workspace,
            rounds,
            chunks,
        } => embed_bench(&workspace, rounds, chunks)?,
        Command::Latency(args) => latency_bench(&args)?,
        Command::Recall {
            workspace,
            questions,
            k,
        } => recall_bench(&workspace, &questions, k)?,
        Command::Soak {
            corpus,
            size,
            searches,
            queries,
            scratch,
        } => soak_bench(&corpus, size, searches, queries.as_deref(), &scratch)?,
        Command::Startup { workspace, query } => startup_bench(&workspace, &query)?,
        Command::Scoped { workspace, rounds } => scoped_bench(&workspace, rounds)?,
        Command::Synthetic {
            corpus,
            size,
            dir,
            like,
        } => synthetic_bench(&corpus, size, &dir, like.as_deref())?,
        Command::Backends {
            workspace,
            url,
            queries,
            searches,
            ef_search,
            expansion,
        } => {
            let mut out = backends_bench(&workspace, &url, &queries, searches)?;
            let sweep = Sweep::load(&workspace, &queries, searches)?;
            out["ef_search_sweep"] = sweep.ef_search(&url, &ef_search)?;
            out["expansion_sweep"] = sweep.expansion(&expansion)?;
            out
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

// ---------------------------------------------------------------- embed

/// Chunk texts exactly as `ragmap index` embeds them (title and heading path prepended).
fn corpus_chunk_texts(config: &Config) -> Result<Vec<String>> {
    let dir = config.corpus_dir();
    let chunker = Chunker::new(&embed::tokenizer_path(config), &config.chunk)?;
    let mut texts = Vec::new();
    for path in corpus::list_markdown(&dir)? {
        let Ok(doc) = corpus::read_document(&dir, &path) else {
            continue;
        };
        let title = doc.display_title();
        for c in chunker.chunk(&doc.body) {
            texts.push(chunk::embedding_text(&title, &c.heading_path, &c.text));
        }
    }
    Ok(texts)
}

/// One padded batch for the bare session: row-major `[rows, len]` inputs.
struct Batch {
    rows: usize,
    len: usize,
    ids: Vec<i64>,
    mask: Vec<i64>,
    types: Vec<i64>,
}

/// Pads tokenized inputs (in the given order, `batch_size` at a time) like
/// fastembed does: to the longest row of each batch.
fn make_batches(encoded: &[Vec<u32>], order: &[usize], batch_size: usize, pad: i64) -> Vec<Batch> {
    order
        .chunks(batch_size)
        .map(|idx| {
            let len = idx.iter().map(|&i| encoded[i].len()).max().unwrap_or(0);
            let rows = idx.len();
            let mut b = Batch {
                rows,
                len,
                ids: vec![pad; rows * len],
                mask: vec![0; rows * len],
                types: vec![0; rows * len],
            };
            for (r, &i) in idx.iter().enumerate() {
                for (c, &id) in encoded[i].iter().enumerate() {
                    b.ids[r * len + c] = id as i64;
                    b.mask[r * len + c] = 1;
                }
            }
            b
        })
        .collect()
}

/// The bare session: run each batch, mean-pool over the mask, L2-normalise.
fn run_bare(
    session: &mut ort::session::Session,
    batches: &[Batch],
    need_types: bool,
) -> Result<Vec<Vec<f32>>> {
    use ort::value::TensorRef;
    let mut out = Vec::new();
    for b in batches {
        let shape = [b.rows, b.len];
        let ids = TensorRef::from_array_view((shape, b.ids.as_slice()))?;
        let mask = TensorRef::from_array_view((shape, b.mask.as_slice()))?;
        let outputs = if need_types {
            let types = TensorRef::from_array_view((shape, b.types.as_slice()))?;
            session.run(ort::inputs![
                "input_ids" => ids,
                "attention_mask" => mask,
                "token_type_ids" => types,
            ])?
        } else {
            session.run(ort::inputs!["input_ids" => ids, "attention_mask" => mask])?
        };
        let (shape, hidden) = outputs[0].try_extract_tensor::<f32>()?;
        let dim = shape[2] as usize;
        for r in 0..b.rows {
            // Mean pooling then L2 normalisation: the mean's 1/n cancels out.
            let mut v = vec![0f32; dim];
            for t in 0..b.len {
                if b.mask[r * b.len + t] == 0 {
                    continue;
                }
                let row = &hidden[(r * b.len + t) * dim..(r * b.len + t + 1) * dim];
                for (acc, x) in v.iter_mut().zip(row) {
                    *acc += x;
                }
            }
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|x| *x /= norm);
            out.push(v);
        }
    }
    Ok(out)
}

fn padded_tokens(batches: &[Batch]) -> usize {
    batches.iter().map(|b| b.rows * b.len).sum()
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn embed_bench(workspace: &Path, rounds: usize, max_chunks: usize) -> Result<Value> {
    let config = Config::load(workspace)?;
    let all = corpus_chunk_texts(&config)?;
    if all.is_empty() {
        bail!("no chunks in {}", config.corpus_dir().display());
    }
    // Evenly spaced over the corpus, so languages and lengths keep their mix.
    let texts: Vec<String> = if max_chunks == 0 || all.len() <= max_chunks {
        all.clone()
    } else {
        (0..max_chunks)
            .map(|i| all[i * all.len() / max_chunks].clone())
            .collect()
    };
    let threads = config.embed.threads.max(1);
    let batch_size = config.embed.batch_size.max(1);

    // The bare side's inputs, tokenized once up front (outside any timing):
    // the same tokenizer file, "passage: " prefix, special tokens, truncation at 512.
    let mut tokenizer = tokenizers::Tokenizer::from_file(embed::tokenizer_path(&config))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tokenizer
        .with_truncation(Some(tokenizers::TruncationParams {
            max_length: 512,
            ..Default::default()
        }))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tokenizer.with_padding(None);
    let model_config: Value =
        serde_json::from_slice(&std::fs::read(config.model_dir().join("config.json"))?)?;
    let pad = model_config["pad_token_id"].as_i64().unwrap_or(1);
    let tokenize_started = Instant::now();
    let encoded: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| {
            tokenizer
                .encode(format!("passage: {t}"), true)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| anyhow::anyhow!("{e}"))
        })
        .collect::<Result<_>>()?;
    let tokenize_seconds = tokenize_started.elapsed().as_secs_f64();
    let real_tokens: usize = encoded.iter().map(Vec::len).sum();

    // Batches as `embed_passages` forms them (sorted by token count: the
    // least padding possible at this batch size), and, for reference, sorted
    // by byte length (what it did before).
    let mut by_bytes: Vec<usize> = (0..texts.len()).collect();
    by_bytes.sort_by_key(|&i| texts[i].len());
    let mut by_tokens: Vec<usize> = (0..texts.len()).collect();
    by_tokens.sort_by_key(|&i| encoded[i].len());
    let same_batches = make_batches(&encoded, &by_tokens, batch_size, pad);
    let byte_batches = make_batches(&encoded, &by_bytes, batch_size, pad);

    let mut embedder = Embedder::load(&config)?;
    let env = embed::environment(&config)?;
    let mut session = ort::session::Session::builder(&env)?
        .with_optimization_level(ort::session::builder::GraphOptimizationLevel::Level3)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_intra_threads(threads)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .commit_from_file(config.model_dir().join("model.onnx"))?;
    let need_types = session
        .inputs()
        .iter()
        .any(|i| i.name() == "token_type_ids");

    // Warm-up: one batch each, so first-run allocations are not timed.
    embedder.embed_passages(&texts[..batch_size.min(texts.len())], |_| {})?;
    run_bare(&mut session, &same_batches[..1], need_types)?;

    let mut t_ragmap = Vec::new();
    let mut t_same = Vec::new();
    let mut t_bytes = Vec::new();
    let mut min_cosine = 1f32;
    for _ in 0..rounds.max(1) {
        let s = Instant::now();
        let ours = embedder.embed_passages(&texts, |_| {})?;
        t_ragmap.push(s.elapsed().as_secs_f64());

        let s = Instant::now();
        let bare = run_bare(&mut session, &same_batches, need_types)?;
        t_same.push(s.elapsed().as_secs_f64());

        let s = Instant::now();
        run_bare(&mut session, &byte_batches, need_types)?;
        t_bytes.push(s.elapsed().as_secs_f64());

        // Same vectors, or the comparison means nothing.
        for (pos, &i) in by_tokens.iter().enumerate() {
            let c: f32 = ours[i].iter().zip(&bare[pos]).map(|(a, b)| a * b).sum();
            min_cosine = min_cosine.min(c);
        }
    }
    let per_round: Vec<Value> = t_ragmap
        .iter()
        .zip(&t_same)
        .zip(&t_bytes)
        .map(
            |((r, s), t)| json!({"ragmap_s": r, "bare_same_batches_s": s, "bare_byte_sorted_s": t}),
        )
        .collect();
    let mut ratio_same: Vec<f64> = t_ragmap.iter().zip(&t_same).map(|(r, s)| s / r).collect();
    let mut ratio_bytes: Vec<f64> = t_ragmap.iter().zip(&t_bytes).map(|(r, s)| s / r).collect();
    let med_r = median(&mut t_ragmap.clone());
    let med_s = median(&mut t_same.clone());
    let med_t = median(&mut t_bytes.clone());
    Ok(json!({
        "chunks": texts.len(),
        "corpus_chunks": all.len(),
        "batch_size": batch_size,
        "intra_threads": threads,
        "rounds": rounds.max(1),
        "real_tokens": real_tokens,
        "padded_tokens_same_batches": padded_tokens(&same_batches),
        "padded_tokens_byte_sorted": padded_tokens(&byte_batches),
        "tokenize_seconds_single_thread": tokenize_seconds,
        "ragmap_tokens_per_s": real_tokens as f64 / med_r,
        "bare_same_batches_tokens_per_s": real_tokens as f64 / med_s,
        "bare_byte_sorted_tokens_per_s": real_tokens as f64 / med_t,
        "ratio_vs_same_batches": median(&mut ratio_same),
        "ratio_vs_byte_sorted_batches": median(&mut ratio_bytes),
        "min_cosine_ragmap_vs_bare": min_cosine,
        "per_round": per_round,
    }))
}

// ---------------------------------------------------------------- latency

fn load_queries(path: Option<&Path>) -> Result<Vec<String>> {
    let Some(path) = path else {
        return Ok(DEFAULT_QUERIES.iter().map(|s| s.to_string()).collect());
    };
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match serde_json::from_str::<Value>(line) {
            Ok(v) => {
                if let Some(q) = v["question"].as_str() {
                    out.push(q.to_string());
                }
            }
            Err(_) => out.push(line.to_string()),
        }
    }
    if out.is_empty() {
        bail!("no questions in {}", path.display());
    }
    Ok(out)
}

const DEFAULT_QUERIES: &[&str] = &[
    "What is retrieval augmented generation and how does it differ from fine-tuning?",
    "How do I serve a model with high throughput using continuous batching?",
    "RAG 和微调有什么区别？",
    "如何评估一个检索增强生成系统的效果？",
    "Which tools help evaluate LLM applications?",
    "LoRA 微调需要多少显存？",
    "How does a knowledge graph help an LLM reason over private data?",
    "什么是智能体，它如何调用工具？",
];

/// A unit vector between two random ones of `like`, with noise of about 0.01 per component.
fn between(like: &[Vec<f32>], rng: &mut StdRng) -> Vec<f32> {
    let (a, b) = (
        &like[rng.random_range(0..like.len())],
        &like[rng.random_range(0..like.len())],
    );
    let t = rng.random::<f32>();
    let mut v: Vec<f32> = a
        .iter()
        .zip(b)
        .map(|(x, y)| t * x + (1.0 - t) * y + (rng.random::<f32>() - 0.5) * 0.035)
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn random_unit(rng: &mut StdRng) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIMENSIONS)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// Concatenated corpus bodies: synthetic chunks are windows of real text, so
/// term frequencies (and FTS posting lists) scale like a real, larger corpus.
fn corpus_text(dir: &Path) -> Result<String> {
    let mut text = String::new();
    for path in corpus::list_markdown(dir)? {
        if let Ok(doc) = corpus::read_document(dir, &path) {
            text.push_str(&doc.body);
            text.push('\n');
        }
    }
    if text.len() < 4_000 {
        bail!("corpus {} holds too little text", dir.display());
    }
    Ok(text)
}

fn window<'a>(text: &'a str, rng: &mut StdRng, len: usize) -> &'a str {
    let mut start = rng.random_range(0..text.len() - len);
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (start + len).min(text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    &text[start..end]
}

/// Builds a synthetic index of `size` chunks (20 per document) through the
/// library's own store and vector types; returns it opened as `ragmap search` does.
fn synthetic_index(dir: &Path, size: usize, text: &str, seed: u64) -> Result<(Embedded, f64)> {
    synthetic_index_like(dir, size, text, seed, &[])
}

/// A synthetic index whose vectors are random unit vectors, or, when `like`
/// holds real ones, points between two of them (plus a little noise): the
/// closest stand-in here for more pages on the same topics.
fn synthetic_index_like(
    dir: &Path,
    size: usize,
    text: &str,
    seed: u64,
    like: &[Vec<f32>],
) -> Result<(Embedded, f64)> {
    let started = Instant::now();
    std::fs::create_dir_all(dir)?;
    let db = dir.join(ragmap::index::store::DB_FILE);
    let _ = std::fs::remove_file(&db);
    let mut rng = StdRng::seed_from_u64(seed);
    let store = Store::open_rw(&db)?;
    let mut vectors = Vectors::new(size, DIMENSIONS)?;
    store.begin()?;
    let per_doc = 20;
    let mut doc_id = 0;
    let (mut title, mut source) = (String::new(), String::new());
    for i in 0..size {
        if i % per_doc == 0 {
            title = format!("Synthetic document {}", i / per_doc);
            source = format!("synthetic/doc-{i}.md");
            doc_id = store.insert_document(&NewDocument {
                path: &source,
                hash: &format!("{i}"),
                title: &title,
                source: &source,
                sections: &[],
                modified: None,
                indexed_at: "2026-01-01T00:00:00Z",
            })?;
        }
        // ~1,000 bytes: about what a 320-token chunk holds.
        let body = window(text, &mut rng, 1000);
        let vector = match like.is_empty() {
            true => random_unit(&mut rng),
            false => between(like, &mut rng),
        };
        let id = store.insert_chunk(
            doc_id,
            &NewChunk {
                ordinal: i % per_doc,
                start: 0,
                end: body.len(),
                heading: "",
                text: body,
                tokens: 320,
                terms: &terms::FieldTerms::of(&title, &source, "", body),
                vector: &vector,
            },
        )?;
        vectors.add(id, &vector)?;
    }
    let count = size.to_string();
    // Recorded as a build would (so `ragmap index --to` can copy it).
    store.set_meta(&[
        ("vectors_file", "vectors.usearch"),
        ("vectors_count", &count),
        ("model", ragmap::config::EMBEDDING_MODEL),
        ("dimensions", "384"),
        ("model_files", ""),
        ("model_stamp", ""),
        ("settings", "synthetic"),
        ("identity", "synthetic"),
        ("built_at", "2026-01-01T00:00:00Z"),
    ])?;
    store.commit()?;
    drop(store);
    let path = dir.join("vectors.usearch");
    vectors.save(&path)?;
    let build_seconds = started.elapsed().as_secs_f64();
    Ok((open_synthetic(dir)?, build_seconds))
}

/// Opens a synthetic index as `ragmap search` opens a real one: the catalogue
/// read-only, the HNSW file memory-mapped.
fn open_synthetic(dir: &Path) -> Result<Embedded> {
    Ok(Embedded::open_dir(dir)?)
}

/// CPU time of the whole process in nanoseconds, every thread counted, the
/// ones that have exited too (Linux: utime + stime of /proc/self/stat, in
/// USER_HZ = 100 ticks a second; fine over a loop of many searches).
fn process_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; the fields after it don't.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let mut fields = after_name.split_whitespace().skip(11);
    let ticks = fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?;
    Some(ticks * 10_000_000)
}

/// Resident set size of this process in MiB (Linux).
fn rss_mib() -> f64 {
    status_mib("VmRSS:")
}

/// Peak resident set size of this process in MiB (Linux).
fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

/// A kB line of /proc/self/status, in MiB (0 when absent).
fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn soak_bench(
    corpus_dir: &Path,
    size: usize,
    searches: usize,
    queries: Option<&Path>,
    scratch: &Path,
) -> Result<Value> {
    let text = corpus_text(corpus_dir)?;
    let queries = load_queries(queries)?;
    let settings = Config::default().retrieve;
    let dir = scratch.join(format!("synthetic-{size}"));
    let (index, build_seconds) = if dir.join("vectors.usearch").is_file() {
        (open_synthetic(&dir)?, 0.0)
    } else {
        synthetic_index(&dir, size, &text, 42)?
    };
    let mut rng = StdRng::seed_from_u64(11);
    let rss_start = rss_mib();
    let tenth = (searches / 10).max(1);
    let mut rss_after_first_tenth = rss_start;
    let mut ms = Vec::with_capacity(searches);
    for i in 0..searches {
        if i == tenth {
            // The memory-mapped HNSW file and SQLite's page cache fill during
            // the first searches; growth after that would be a leak.
            rss_after_first_tenth = rss_mib();
        }
        let q = &queries[i % queries.len()];
        let v = random_unit(&mut rng);
        let s = Instant::now();
        let hits = retrieve::retrieve_embedded(
            &index,
            std::slice::from_ref(&v),
            std::slice::from_ref(q),
            &settings,
        )?;
        ms.push(s.elapsed().as_secs_f64() * 1000.0);
        std::hint::black_box(hits);
    }
    Ok(json!({
        "chunks": size,
        "searches": searches,
        "build_seconds": build_seconds,
        "rss_mib_start": rss_start,
        "rss_mib_after_first_tenth": rss_after_first_tenth,
        "rss_mib_end": rss_mib(),
        "first_tenth": percentiles(ms[..tenth].to_vec()),
        "last_tenth": percentiles(ms[ms.len() - tenth..].to_vec()),
        "all": percentiles(ms),
    }))
}

fn percentiles(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    json!({"p50_ms": at(0.5), "p99_ms": at(0.99), "mean_ms": ms.iter().sum::<f64>() / ms.len() as f64, "n": ms.len()})
}

#[derive(clap::Args)]
struct LatencyArgs {
    /// Markdown corpus whose text the synthetic chunks are cut from.
    #[arg(long)]
    corpus: PathBuf,
    /// Comma-separated index sizes, in chunks.
    #[arg(long, default_value = "1000,10000,100000")]
    sizes: String,
    /// Questions (JSON lines with a "question" field, or plain lines).
    #[arg(long)]
    queries: Option<PathBuf>,
    /// Timed searches per mode and size.
    #[arg(long, default_value_t = 300)]
    searches: usize,
    /// Workspace whose model times query embedding (skipped when absent or not installed).
    #[arg(long)]
    workspace: Option<PathBuf>,
    /// Where the synthetic indexes are built (a temporary folder by default).
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Row budgets of lexical term pruning to compare (speed against exact BM25 order).
    #[arg(long, value_delimiter = ',', default_value = "4000,8000,16000,32000")]
    budgets: Vec<usize>,
    /// Reuse synthetic indexes already in --scratch (for iterating on retrieval code).
    #[arg(long)]
    reuse: bool,
}

fn latency_bench(args: &LatencyArgs) -> Result<Value> {
    let LatencyArgs {
        corpus,
        sizes,
        queries,
        searches,
        workspace,
        scratch,
        budgets,
        reuse,
    } = args;
    let (searches, reuse) = (*searches, *reuse);
    let text = corpus_text(corpus)?;
    let queries = load_queries(queries.as_deref())?;
    let settings = Config::default().retrieve;
    let weights = retrieve::field_weights(&settings);
    let k = settings.top_k;
    let hybrid = Retrieve {
        mode: RetrieveMode::Hybrid,
        ..settings.clone()
    };
    let tmp = tempfile::tempdir()?;
    let scratch = scratch.as_deref().unwrap_or(tmp.path());
    let mut rng = StdRng::seed_from_u64(7);
    let query_vectors: Vec<Vec<f32>> = queries.iter().map(|_| random_unit(&mut rng)).collect();

    let mut results = Vec::new();
    for size in sizes.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let size: usize = size.parse().context("bad size")?;
        let dir = scratch.join(format!("synthetic-{size}"));
        let (index, build_seconds) = match reuse {
            true if dir.join("vectors.usearch").is_file() => (open_synthetic(&dir)?, 0.0),
            _ => synthetic_index(&dir, size, &text, 42)?,
        };
        let mut row = json!({"chunks": size, "build_seconds": build_seconds});
        // Warm-up over every query (hybrid runs both retrievers): page and statement caches.
        for (q, v) in queries.iter().zip(&query_vectors) {
            retrieve::retrieve_embedded(
                &index,
                std::slice::from_ref(v),
                std::slice::from_ref(q),
                &hybrid,
            )?;
        }
        // Hybrid without the cross-language bridges (glossary expansion,
        // names): what they cost.
        let without_bridges = Retrieve {
            expansion_weight: 0.0,
            name_weight: 0.0,
            ..hybrid.clone()
        };
        for (name, by_mode) in [
            (
                "vector",
                Retrieve {
                    mode: RetrieveMode::Vector,
                    ..settings.clone()
                },
            ),
            (
                "lexical",
                Retrieve {
                    mode: RetrieveMode::Lexical,
                    ..settings.clone()
                },
            ),
            ("hybrid", hybrid.clone()),
            ("hybrid_without_bridges", without_bridges),
        ] {
            let mut ms = Vec::with_capacity(searches);
            let cpu_start = process_cpu_ns();
            for i in 0..searches {
                let q = &queries[i % queries.len()];
                let v = &query_vectors[i % queries.len()];
                let s = Instant::now();
                let hits = retrieve::retrieve_embedded(
                    &index,
                    std::slice::from_ref(v),
                    std::slice::from_ref(q),
                    &by_mode,
                )?;
                ms.push(s.elapsed().as_secs_f64() * 1000.0);
                std::hint::black_box(hits);
            }
            let cpu = cpu_start
                .zip(process_cpu_ns())
                .map(|(a, b)| (b - a) as f64 / 1e6 / searches as f64);
            row[name] = percentiles(ms);
            // Wall time waits for the CPU on a loaded machine; CPU time does
            // not (a hybrid search's HNSW thread included).
            row[name]["cpu_mean_ms"] = json!(cpu);
        }
        // The raw retrievers alone, without row fetching, fusion or selection;
        // FTS5 with every query term (exact OR query) and with common terms
        // pruned to the row budget (what retrieval does), and how far their
        // rankings agree.
        let candidates = settings.candidates.max(k * 3);
        let mut fts = Vec::new();
        let mut fts_exact = Vec::new();
        let mut hnsw = Vec::new();
        let (mut agree_all, mut agree_top, mut pruned_queries) = (0.0, 0.0, 0usize);
        let mut score_ratio = 0.0;
        for i in 0..searches {
            let q = &queries[i % queries.len()];
            let query_terms = terms::query_terms(q);
            if let Some(expr) = terms::match_expr(&query_terms) {
                let s = Instant::now();
                let exact = index.store.lexical_search(&expr, candidates, &weights)?;
                fts_exact.push(s.elapsed().as_secs_f64() * 1000.0);
                let s = Instant::now();
                let pruned =
                    index
                        .store
                        .lexical_search_terms(&query_terms, candidates, &weights)?;
                fts.push(s.elapsed().as_secs_f64() * 1000.0);
                if i < queries.len() {
                    // Exact BM25 score of what pruning returns, against the exact top k:
                    // near-duplicate chunks make id overlap a poor measure here.
                    let wide: std::collections::HashMap<i64, f64> = index
                        .store
                        .lexical_search(&expr, 2000, &weights)?
                        .into_iter()
                        .collect();
                    let floor = wide.values().copied().fold(f64::INFINITY, f64::min);
                    let best: f64 = exact.iter().take(k).map(|x| x.1).sum();
                    let got: f64 = pruned
                        .iter()
                        .take(k)
                        .map(|x| wide.get(&x.0).copied().unwrap_or(floor))
                        .sum();
                    score_ratio += if best > 0.0 { got / best } else { 1.0 };
                    let overlap = |n: usize| {
                        let a: HashSet<i64> = exact.iter().take(n).map(|x| x.0).collect();
                        let b = pruned.iter().take(n).filter(|x| a.contains(&x.0)).count();
                        b as f64 / a.len().max(1) as f64
                    };
                    agree_all += overlap(candidates);
                    agree_top += overlap(k);
                    let kept = index
                        .store
                        .prune_common_terms(&query_terms, ragmap::index::LEXICAL_ROW_BUDGET)?;
                    pruned_queries += usize::from(kept.len() < query_terms.len());
                }
            }
            let s = Instant::now();
            std::hint::black_box(
                index
                    .vectors
                    .search(&query_vectors[i % queries.len()], candidates)?,
            );
            hnsw.push(s.elapsed().as_secs_f64() * 1000.0);
        }
        // The pruning budget's trade-off: FTS5 time against the exact BM25
        // score mass of the top k.
        let mut tradeoff = Vec::new();
        for &budget in budgets {
            let (mut ms, mut ratio) = (Vec::new(), 0.0);
            for q in queries.iter().take(searches) {
                let query_terms = terms::query_terms(q);
                let Some(expr) = terms::match_expr(&query_terms) else {
                    continue;
                };
                let s = Instant::now();
                let kept = index.store.prune_common_terms(&query_terms, budget)?;
                let pruned = match terms::match_expr(&kept) {
                    Some(e) => index.store.lexical_search(&e, candidates, &weights)?,
                    None => Vec::new(),
                };
                ms.push(s.elapsed().as_secs_f64() * 1000.0);
                let wide: std::collections::HashMap<i64, f64> = index
                    .store
                    .lexical_search(&expr, 2000, &weights)?
                    .into_iter()
                    .collect();
                let mut top: Vec<f64> = wide.values().copied().collect();
                top.sort_by(|a, b| b.total_cmp(a));
                let best: f64 = top.iter().take(k).sum();
                let got: f64 = pruned
                    .iter()
                    .take(k)
                    .map(|x| wide.get(&x.0).copied().unwrap_or(0.0))
                    .sum();
                ratio += if best > 0.0 { got / best } else { 1.0 };
            }
            let n = ms.len().max(1) as f64;
            tradeoff.push(json!({"budget": budget, "fts5": percentiles(ms), "top_k_exact_bm25_score_ratio": ratio / n}));
        }
        row["pruning_budgets"] = json!(tradeoff);
        row["fts5_bm25_only"] = percentiles(fts);
        row["fts5_bm25_exact_or"] = percentiles(fts_exact);
        let nq = queries.len().min(searches).max(1) as f64;
        row["pruning"] = json!({
            "queries_pruned": pruned_queries,
            "queries": queries.len().min(searches),
            "top_candidates_overlap_with_exact": agree_all / nq,
            "top_k_overlap_with_exact": agree_top / nq,
            "top_k_exact_bm25_score_ratio": score_ratio / nq,
        });
        row["hnsw_only"] = percentiles(hnsw);
        eprintln!("latency: {size} chunks done");
        results.push(row);
    }

    // Query embedding, separately (what the numbers above exclude).
    let mut query_embedding = Value::Null;
    if let Some(ws) = workspace {
        let config = Config::load(ws)?;
        if let Ok(mut embedder) = Embedder::load(&config) {
            let mut ms = Vec::new();
            for (i, q) in queries
                .iter()
                .cycle()
                .take(queries.len().max(50))
                .enumerate()
            {
                let s = Instant::now();
                std::hint::black_box(embedder.embed_query(q)?);
                if i >= 3 {
                    ms.push(s.elapsed().as_secs_f64() * 1000.0);
                }
            }
            query_embedding = percentiles(ms);
        }
    }
    Ok(json!({
        "queries": queries.len(),
        "searches_per_mode": searches,
        "k": k,
        "candidates": settings.candidates.max(k * 3),
        "sizes": results,
        "query_embedding": query_embedding,
    }))
}

// ---------------------------------------------------------------- recall

fn recall_bench(workspace: &Path, questions: &Path, k: usize) -> Result<Value> {
    let config = Config::load(workspace)?;
    let index = ragmap::index::open(&config)?;
    let mut embedder = Embedder::load(&config)?;
    let rows = eval::load_questions(questions)?;
    let mut settings = config.retrieve.clone();
    settings.max_chunks_per_doc = 1;
    settings.top_k = k;
    let mut out = json!({"questions": rows.len(), "k": k});
    for (name, mode) in [
        ("hybrid", RetrieveMode::Hybrid),
        ("vector", RetrieveMode::Vector),
        ("lexical", RetrieveMode::Lexical),
    ] {
        settings.mode = mode;
        let mut found = 0usize;
        for q in &rows {
            let hits = retrieve::retrieve(
                &*index,
                Some(&mut embedder),
                std::slice::from_ref(&q.question),
                &settings,
            )?;
            // A question counts when any gold document is among its k passages.
            let hit = hits.iter().any(|h| {
                let doc = eval::RankedDoc::from(h);
                q.gold.iter().any(|g| eval::matches(&doc, g))
            });
            found += usize::from(hit);
        }
        out[format!("recall_at_{k}_{name}")] = json!(found as f64 / rows.len().max(1) as f64);
    }
    Ok(out)
}

// ---------------------------------------------------------------- startup

/// Each load step of a one-shot `ragmap search`, one after another in this
/// process (the order `ragmap search` used before loading went side by side):
/// wall time and resident memory after each step.
fn startup_bench(workspace: &Path, query: &str) -> Result<Value> {
    let config = Config::load(workspace)?;
    let mut steps = Vec::new();
    let mut step = |name: &str, started: Instant| {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        steps.push(json!({"step": name, "ms": ms, "rss_mib": rss_mib()}));
    };
    let t = Instant::now();
    let environment = embed::environment(&config)?;
    step("onnxruntime library and environment", t);
    let t = Instant::now();
    let model = std::fs::read(config.model_dir().join("model.onnx"))?;
    step("model.onnx read", t);
    let t = Instant::now();
    let mut session = ort::session::Session::builder(&environment)?
        .with_optimization_level(ort::session::builder::GraphOptimizationLevel::Level3)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_intra_threads(config.embed.threads.max(1))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .commit_from_memory(&model)?;
    step("ONNX session creation", t);
    drop(model);
    let json = embed::tokenizer_path(&config);
    let t = Instant::now();
    drop(ragmap::tokenizer::load_cached(&json, None)?);
    step("tokenizer from tokenizer.json (first use)", t);
    let t = Instant::now();
    let tokenizer = ragmap::tokenizer::load(&json)?;
    step("tokenizer from its cache", t);
    let t = Instant::now();
    let db = config.index_dir().join(ragmap::index::store::DB_FILE);
    let store = Store::open_ro(&db)?;
    let vectors_file = store.meta("vectors_file")?.context("no vectors_file")?;
    let count: usize = store
        .meta("vectors_count")?
        .and_then(|c| c.parse().ok())
        .context("no vectors_count")?;
    step("SQLite open", t);
    let t = Instant::now();
    let dimensions: usize = store
        .meta("dimensions")?
        .and_then(|d| d.parse().ok())
        .unwrap_or(DIMENSIONS);
    let vectors = Vectors::view(&config.index_dir().join(vectors_file), count, dimensions)?;
    step("HNSW view", t);
    let t = Instant::now();
    let terms = terms::query_terms(query);
    step("jieba dictionary (first segmentation)", t);
    let t = Instant::now();
    let encoding = tokenizer
        .encode(format!("query: {query}"), true)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ids: Vec<i64> = encoding.get_ids().iter().map(|&i| i as i64).collect();
    let batch = Batch {
        rows: 1,
        len: ids.len(),
        mask: vec![1; ids.len()],
        types: vec![0; ids.len()],
        ids,
    };
    let need_types = session
        .inputs()
        .iter()
        .any(|input| input.name() == "token_type_ids");
    let vector = run_bare(&mut session, std::slice::from_ref(&batch), need_types)?;
    step("query embedding (first run)", t);
    let t = Instant::now();
    let hits = vectors.search(&vector[0], 40)?;
    step("HNSW search", t);
    let t = Instant::now();
    drop(tokenizer);
    step("tokenizer drop", t);
    drop(session);
    let t = Instant::now();
    drop(Embedder::load(&config)?);
    step("Embedder::load (tokenizer and session side by side)", t);
    Ok(json!({
        "steps": steps,
        "hits": hits.len(),
        "terms": terms.len(),
        "peak_rss_mib": peak_rss_mib(),
    }))
}

// ---------------------------------------------------------------- scoped

fn scoped_bench(workspace: &Path, rounds: usize) -> Result<Value> {
    use ragmap::index::{build, build_in, BuildOptions, BuildReport, Models, Scope};
    let config = Config::load(workspace)?;
    // Kept across the scoped runs, as the watcher keeps them.
    let mut models = Models::default();
    let corpus_dir = config.corpus_dir();
    let options = BuildOptions {
        rebuild: false,
        progress: false,
    };
    build(&config, &options)?;
    let pages: Vec<PathBuf> = corpus::list_markdown(&corpus_dir)?
        .into_iter()
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 6000))
        .collect();
    if pages.is_empty() {
        bail!("no page over 6,000 bytes in {}", corpus_dir.display());
    }
    let mut runs: [Vec<BuildReport>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for turn in 0..2 {
            let scoped = (round + turn) % 2 == 0;
            let page = &pages[(round * 2 + turn) * 7 % pages.len()];
            let text = std::fs::read_to_string(page)?;
            // The first paragraph break past the middle (a char boundary).
            let middle = text
                .match_indices("\n\n")
                .map(|(i, _)| i)
                .find(|&i| i >= text.len() / 2)
                .unwrap_or(text.len());
            let edited = format!(
                "{}\n\nEdited in round {round}: scopedmark{round}x{turn}.\n{}",
                &text[..middle],
                &text[middle..]
            );
            std::fs::write(page, edited)?;
            let rel = corpus::rel_path(&corpus_dir, page);
            let report = match scoped {
                true => build_in(&config, &options, &Scope::Paths([rel].into()), &mut models)?,
                false => build(&config, &options)?,
            };
            runs[usize::from(!scoped)].push(report);
        }
    }
    let summary = |reports: &[BuildReport]| {
        let p50 = |f: &dyn Fn(&BuildReport) -> f64| {
            let mut v: Vec<f64> = reports.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        json!({
            "n": reports.len(),
            "scanned": p50(&|r| r.scanned as f64),
            "embedded_p50": p50(&|r| r.chunks_embedded as f64),
            "kept_p50": p50(&|r| r.chunks_reused as f64),
            "total_p50_s": p50(&|r| r.total_seconds),
            "chunk_p50_s": p50(&|r| r.chunk_seconds),
            "embed_p50_s": p50(&|r| r.model_load_seconds + r.embed_seconds),
        })
    };
    Ok(json!({"scoped": summary(&runs[0]), "full": summary(&runs[1])}))
}

// ---------------------------------------------------------------- backends

/// Every vector of the embedded index in `dir`, by chunk id.
fn stored_vectors(dir: &Path) -> Result<Vec<(i64, Vec<f32>)>> {
    let store = Store::open_ro(&dir.join(ragmap::index::store::DB_FILE))?;
    let mut out = Vec::new();
    store.for_each_vector(|id, v| out.push((id, v.to_vec())))?;
    Ok(out)
}

fn synthetic_bench(corpus: &Path, size: usize, dir: &Path, like: Option<&Path>) -> Result<Value> {
    let text = corpus_text(corpus)?;
    let like = match like {
        Some(ws) => stored_vectors(&Config::load(ws)?.index_dir())?
            .into_iter()
            .map(|(_, v)| v)
            .collect(),
        None => Vec::new(),
    };
    let (_, seconds) = synthetic_index_like(dir, size, &text, 42, &like)?;
    Ok(json!({"chunks": size, "build_seconds": seconds, "vectors_between_real": like.len()}))
}

/// The `k` nearest of `all` to `q` by cosine (exact), best first, and the
/// k-th similarity.
fn exact_nearest(all: &[(i64, Vec<f32>)], q: &[f32], k: usize) -> (Vec<i64>, f32) {
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    let qn = norm(q);
    let mut scored: Vec<(f32, i64)> = all
        .iter()
        .map(|(id, v)| {
            let dot: f32 = v.iter().zip(q).map(|(a, b)| a * b).sum();
            (dot / (qn * norm(v)), *id)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.truncate(k);
    let kth = scored.last().map_or(0.0, |s| s.0);
    (scored.into_iter().map(|(_, id)| id).collect(), kth)
}

/// A chunk as both backends name it (their ids may differ after a copy).
fn chunk_keys(snapshot: &dyn ragmap::index::Snapshot, ids: &[i64]) -> Result<Vec<(String, i64)>> {
    let rows = snapshot.chunks_by_ids(ids)?;
    Ok(ids
        .iter()
        .filter_map(|id| rows.get(id).map(|r| (r.path.clone(), r.ordinal)))
        .collect())
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut n, mut m) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        n += x * x;
        m += y * y;
    }
    dot / (n.sqrt() * m.sqrt()).max(1e-12)
}

/// Each backend's recall@10 against an exact scan of the embedded index's
/// vectors `all` (`reference`, which names their ids): a chunk found counts
/// when it is as similar as the 10th exact neighbour (ties included).
fn vector_recall(
    reference: &dyn ragmap::index::Index,
    backends: &[(&str, &dyn ragmap::index::Index)],
    all: &[(i64, Vec<f32>)],
    query_vectors: &[Vec<f32>],
) -> Result<Value> {
    let ids: Vec<i64> = all.iter().map(|(id, _)| *id).collect();
    let keys = {
        let snapshot = reference.snapshot()?.context("no snapshot")?;
        chunk_keys(&*snapshot, &ids)?
    };
    let by_key: std::collections::HashMap<&(String, i64), &Vec<f32>> =
        keys.iter().zip(all.iter().map(|(_, v)| v)).collect();
    let mut out = json!({});
    for (name, index) in backends {
        let (mut found, mut asked) = (0usize, 0usize);
        for q in query_vectors {
            let (_, kth) = exact_nearest(all, q, 10);
            let snapshot = index.snapshot()?.context("no snapshot")?;
            let got: Vec<i64> = snapshot
                .vectors()
                .nearest(q, 10)?
                .into_iter()
                .map(|h| h.0)
                .collect();
            for key in chunk_keys(&*snapshot, &got)? {
                found += usize::from(by_key.get(&key).is_some_and(|v| cosine(v, q) >= kth - 1e-5));
            }
            asked += 10;
        }
        out[*name] = json!(found as f64 / asked.max(1) as f64);
    }
    Ok(out)
}

/// The questions in `queries` and their query vectors.
fn embedded_questions(config: &Config, queries: &Path) -> Result<(Vec<String>, Vec<Vec<f32>>)> {
    let questions = load_queries(Some(queries))?;
    let mut embedder = Embedder::load(config)?;
    let vectors = questions
        .iter()
        .map(|q| embedder.embed_query(q))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((questions, vectors))
}

/// A workspace's embedded index and its PostgreSQL copy, side by side: each
/// mode's retrieval latency (the backends alternating search by search, the
/// same questions and question vectors), and vector recall@10.
fn backends_bench(workspace: &Path, url: &str, queries: &Path, searches: usize) -> Result<Value> {
    let config = Config::load(workspace)?;
    let mut pg_config = config.clone();
    pg_config.index.url = Some(url.to_string());
    let embedded = ragmap::index::open(&config)?;
    let postgres = ragmap::index::open(&pg_config)?;
    let backends: [(&str, &dyn ragmap::index::Index); 2] =
        [("embedded", &*embedded), ("postgres", &*postgres)];
    let (questions, query_vectors) = embedded_questions(&config, queries)?;
    let settings = config.retrieve.clone();
    let search = |index: &dyn ragmap::index::Index, i: usize, mode: RetrieveMode| {
        let i = i % questions.len();
        let by_mode = Retrieve {
            mode,
            ..settings.clone()
        };
        let started = Instant::now();
        let hits = retrieve::retrieve_embedded(
            index,
            std::slice::from_ref(&query_vectors[i]),
            std::slice::from_ref(&questions[i]),
            &by_mode,
        )?;
        std::hint::black_box(hits);
        Ok::<f64, anyhow::Error>(started.elapsed().as_secs_f64() * 1000.0)
    };
    for (_, index) in &backends {
        for i in 0..questions.len() {
            search(*index, i, RetrieveMode::Hybrid)?;
        }
    }
    let mut out = json!({"chunks": embedded.counts()?.chunks, "questions": questions.len()});
    for (name, mode) in [
        ("hybrid", RetrieveMode::Hybrid),
        ("lexical", RetrieveMode::Lexical),
        ("vector", RetrieveMode::Vector),
    ] {
        let mut ms = [Vec::new(), Vec::new()];
        for i in 0..searches {
            for side in [i % 2, 1 - i % 2] {
                ms[side].push(search(backends[side].1, i, mode)?);
            }
        }
        let [e, p] = ms;
        out[name] = json!({"embedded": percentiles(e), "postgres": percentiles(p)});
    }
    let all = stored_vectors(&config.index_dir())?;
    out["recall_at_10"] = vector_recall(&*embedded, &backends, &all, &query_vectors)?;
    out["ef_search"] = json!(config.index.ef_search);
    Ok(out)
}

/// HNSW search settings compared side by side on one workspace: each value's
/// recall@10 against an exact scan, and its retrieval latency alternating
/// search by search with a baseline (the same questions and vectors).
struct Sweep {
    config: Config,
    questions: Vec<String>,
    query_vectors: Vec<Vec<f32>>,
    all: Vec<(i64, Vec<f32>)>,
    searches: usize,
}

impl Sweep {
    fn load(workspace: &Path, queries: &Path, searches: usize) -> Result<Sweep> {
        let config = Config::load(workspace)?;
        let (questions, query_vectors) = embedded_questions(&config, queries)?;
        let all = stored_vectors(&config.index_dir())?;
        Ok(Sweep {
            config,
            questions,
            query_vectors,
            all,
            searches,
        })
    }

    fn time(&self, index: &dyn ragmap::index::Index, i: usize, mode: RetrieveMode) -> Result<f64> {
        let i = i % self.questions.len();
        let settings = Retrieve {
            mode,
            ..self.config.retrieve.clone()
        };
        let started = Instant::now();
        let hits = retrieve::retrieve_embedded(
            index,
            std::slice::from_ref(&self.query_vectors[i]),
            std::slice::from_ref(&self.questions[i]),
            &settings,
        )?;
        std::hint::black_box(hits);
        Ok(started.elapsed().as_secs_f64() * 1000.0)
    }

    /// Hybrid and vector latency of `a` and `b`, alternating search by
    /// search (after one warm-up pass over the questions on each).
    fn pair(&self, a: &dyn ragmap::index::Index, b: &dyn ragmap::index::Index) -> Result<Value> {
        for index in [a, b] {
            for i in 0..self.questions.len() {
                self.time(index, i, RetrieveMode::Hybrid)?;
            }
        }
        let mut out = json!({});
        for (name, mode) in [
            ("hybrid", RetrieveMode::Hybrid),
            ("vector", RetrieveMode::Vector),
        ] {
            let mut ms = [Vec::new(), Vec::new()];
            for i in 0..self.searches {
                for side in [i % 2, 1 - i % 2] {
                    ms[side].push(self.time([a, b][side], i, mode)?);
                }
            }
            let [a, b] = ms;
            out[name] = json!([percentiles(a), percentiles(b)]);
        }
        Ok(out)
    }

    /// The PostgreSQL copy at `url` at each pgvector `hnsw.ef_search` of
    /// `values`, beside the embedded index (at its default expansion).
    fn ef_search(&self, url: &str, values: &[usize]) -> Result<Value> {
        let embedded = Embedded::open_dir(&self.config.index_dir())?;
        let mut rows = Vec::new();
        for &ef in values {
            let mut pg_config = self.config.clone();
            pg_config.index.url = Some(url.to_string());
            pg_config.index.ef_search = ef;
            let postgres = ragmap::index::open(&pg_config)?;
            let mut row = self.pair(&embedded, &*postgres)?;
            row["ef_search"] = json!(ef);
            row["recall_at_10"] = vector_recall(
                &embedded,
                &[("embedded", &embedded), ("postgres", &*postgres)],
                &self.all,
                &self.query_vectors,
            )?;
            rows.push(row);
        }
        Ok(json!(rows))
    }

    /// The embedded index at each usearch `expansion_search` of `values`,
    /// beside itself at the default ([`ragmap::index::vectors::EXPANSION_SEARCH`]).
    fn expansion(&self, values: &[usize]) -> Result<Value> {
        let default = Embedded::open_dir(&self.config.index_dir())?;
        let tuned = Embedded::open_dir(&self.config.index_dir())?;
        let mut rows = Vec::new();
        for &expansion in values {
            tuned.vectors.set_expansion_search(expansion);
            let mut row = self.pair(&default, &tuned)?;
            row["expansion"] = json!(expansion);
            row["default"] = json!(ragmap::index::vectors::EXPANSION_SEARCH);
            row["recall_at_10"] = vector_recall(
                &default,
                &[("default", &default), ("tuned", &tuned)],
                &self.all,
                &self.query_vectors,
            )?;
            rows.push(row);
        }
        Ok(json!(rows))
    }
}
