//! The `ragmap` command line. Library errors are mapped to one-line messages
//! and documented exit codes here, and nowhere else.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ragmap::config::{Config, RetrieveMode};
use ragmap::embed::EmbedError;
use ragmap::eval;
use ragmap::index::{self, BuildOptions, IndexError};
use ragmap::retrieve::{Hit, RetrieveError};
use ragmap::term::sanitize;

mod cli {
    pub mod ask;
    pub mod eval;
}
use cli::ask;

/// Exit codes (documented in the README).
mod exit {
    pub const FAILURE: u8 = 1;
    pub const SETUP: u8 = 3;
    pub const INDEX: u8 = 4;
    /// No chat endpoint answered; the retrieved passages were printed instead.
    pub const LLM_UNREACHABLE: u8 = 5;
    /// The endpoint answered with an error, or the answer broke off (what arrived stays printed).
    pub const LLM_FAILED: u8 = 6;
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Parser)]
#[command(
    name = "ragmap",
    version,
    about = "Local RAG assistant over the AI-engineering roadmap's resources"
)]
struct Cli {
    /// Workspace directory holding config.toml, corpus/ and index/.
    #[arg(
        long,
        short = 'C',
        global = true,
        env = "RAGMAP_HOME",
        default_value = "."
    )]
    workspace: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Chunk, embed and index corpus/ (incremental: only changed documents are re-embedded).
    Index {
        /// Discard the existing index and build it again from scratch.
        #[arg(long)]
        rebuild: bool,
        /// Print a JSON report instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show the passages that best match a question.
    Search {
        question: String,
        /// Number of passages.
        #[arg(short, long)]
        k: Option<usize>,
        #[arg(long, value_enum)]
        mode: Option<RetrieveMode>,
        #[arg(long)]
        json: bool,
    },
    /// Answer a question from the indexed resources, with cited sources.
    Ask {
        question: String,
        /// Passages given to the model.
        #[arg(short, long)]
        k: Option<usize>,
        #[arg(long, value_enum)]
        mode: Option<RetrieveMode>,
        /// Print the exact prompt and stop; no model is called.
        #[arg(long)]
        dry_run: bool,
        /// Do not translate the question for cross-language retrieval.
        #[arg(long)]
        no_rewrite: bool,
        /// Print answer, sources and timings as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        llm: LlmFlags,
    },
    /// Ask follow-up questions in a conversation (/sources, /reset, /exit).
    Chat {
        #[arg(short, long)]
        k: Option<usize>,
        #[arg(long, value_enum)]
        mode: Option<RetrieveMode>,
        #[arg(long)]
        no_rewrite: bool,
        #[command(flatten)]
        llm: LlmFlags,
    },
    /// Score retrieval (and with --answers, the model's answers) against a
    /// question file with gold documents (JSON lines).
    Eval {
        /// Questions: one JSON object a line with id, question, gold (URLs or corpus paths).
        questions: PathBuf,
        /// Configurations side by side, e.g. `hybrid,vector,lexical,hybrid:lexical_weight=0.5:rrf_k=30`.
        #[arg(long, conflicts_with = "mode")]
        compare: Option<String>,
        /// Evaluate one mode (default: the configured mode).
        #[arg(long, value_enum)]
        mode: Option<RetrieveMode>,
        /// Print the full report (metrics and every question's ranking) as JSON.
        #[arg(long)]
        json: bool,
        /// Also answer every question with the model and score the answers
        /// (keyword coverage, citation validity, gold sources cited).
        #[arg(long)]
        answers: bool,
        /// Also retrieve with each question's translation by the model, as `ask` does.
        #[arg(long)]
        rewrite: bool,
        #[command(flatten)]
        llm: LlmFlags,
    },
    /// Show what is indexed and what changed since.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Write the roadmap's resource list (headings and links only) to corpus/roadmap.md.
    Roadmap {
        /// The roadmap article (markdown).
        src: PathBuf,
        /// Output file; default <corpus>/roadmap.md.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Fetch every roadmap resource into corpus/web/ (incremental; Ctrl-C keeps finished pages).
    Crawl {
        /// Markdown file or http(s) URL; default <corpus>/roadmap.md.
        #[arg(long)]
        roadmap: Option<String>,
        /// Follow same-host links this many hops.
        #[arg(long, default_value_t = 0)]
        depth: u32,
        /// Plain progress lines instead of a bar.
        #[arg(long)]
        plain: bool,
        /// Override crawl.block_private.
        #[arg(long, value_parser = ["auto", "always", "never"])]
        block_private: Option<String>,
    },
}

/// Overrides of `[llm]` in config.toml.
#[derive(clap::Args)]
struct LlmFlags {
    /// openai (any OpenAI-compatible server) or ollama.
    #[arg(long, value_enum)]
    provider: Option<ragmap::config::Provider>,
    /// Base URL, e.g. http://127.0.0.1:8080/v1 or http://127.0.0.1:11434.
    #[arg(long)]
    base_url: Option<String>,
    #[arg(long)]
    model: Option<String>,
    #[arg(long)]
    temperature: Option<f32>,
    /// The model's context window in tokens.
    #[arg(long)]
    context_tokens: Option<usize>,
}

impl LlmFlags {
    fn apply(&self, config: &mut Config) {
        if let Some(p) = self.provider {
            config.llm.provider = p;
        }
        if let Some(u) = &self.base_url {
            config.llm.base_url = Some(u.clone());
        }
        if let Some(m) = &self.model {
            config.llm.model = m.clone();
        }
        if let Some(t) = self.temperature {
            config.llm.temperature = t;
        }
        if let Some(c) = self.context_tokens {
            config.llm.context_tokens = c;
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let code = exit_code(&err);
            eprintln!("error: {}", one_line(&err));
            ExitCode::from(code)
        }
    }
}

/// The error chain on one line: "context: cause".
fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if parts.last().is_some_and(|last| last.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    sanitize(&parts.join(": ").replace('\n', " ")).into_owned()
}

fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause
            .downcast_ref::<EmbedError>()
            .is_some_and(is_setup_error)
        {
            return exit::SETUP;
        }
        if let Some(e) = cause.downcast_ref::<IndexError>() {
            return match e {
                IndexError::Embed(inner) if is_setup_error(inner) => exit::SETUP,
                IndexError::Missing(_) | IndexError::Corrupt { .. } => exit::INDEX,
                _ => exit::FAILURE,
            };
        }
        if let Some(RetrieveError::Embed(inner)) = cause.downcast_ref::<RetrieveError>() {
            if is_setup_error(inner) {
                return exit::SETUP;
            }
        }
    }
    exit::FAILURE
}

fn is_setup_error(e: &EmbedError) -> bool {
    !matches!(e, EmbedError::Run(_))
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let mut config = Config::load(&cli.workspace)?;
    match cli.command {
        Command::Ask {
            question,
            k,
            mode,
            dry_run,
            no_rewrite,
            json,
            llm,
        } => {
            llm.apply(&mut config);
            ask::run(&config, &question, k, mode, dry_run, !no_rewrite, json)
        }
        Command::Chat {
            k,
            mode,
            no_rewrite,
            llm,
        } => {
            llm.apply(&mut config);
            ask::chat(&config, k, mode, !no_rewrite)
        }
        Command::Index { rebuild, json } => cmd_index(&config, rebuild, json),
        Command::Search {
            question,
            k,
            mode,
            json,
        } => cmd_search(&config, &question, k, mode, json),
        Command::Status { json } => cmd_status(&config, json),
        Command::Eval {
            questions,
            compare,
            mode,
            json,
            answers,
            rewrite,
            llm,
        } => {
            llm.apply(&mut config);
            let options = eval::RunOptions { rewrite, answers };
            cli::eval::run(&config, &questions, compare, mode, options, json)
        }
        Command::Roadmap { src, out } => cmd_roadmap(&config, &src, out),
        Command::Crawl {
            roadmap,
            depth,
            plain,
            block_private,
        } => cmd_crawl(&config, roadmap, depth, plain, block_private),
    }
}

fn cmd_roadmap(config: &Config, src: &std::path::Path, out: Option<PathBuf>) -> anyhow::Result<u8> {
    let text =
        std::fs::read_to_string(src).with_context(|| format!("cannot read {}", src.display()))?;
    let out = out.unwrap_or_else(|| config.corpus_dir().join("roadmap.md"));
    let doc = ragmap::roadmap::build_resource_list(&text);
    ragmap::corpus::write_atomic(&out, doc.as_bytes())
        .with_context(|| format!("cannot write {}", out.display()))?;
    let n = ragmap::roadmap::parse(&text).resources.len();
    println!("wrote {} ({n} resources)", out.display());
    Ok(0)
}

fn cmd_crawl(
    config: &Config,
    roadmap: Option<String>,
    depth: u32,
    plain: bool,
    block_private: Option<String>,
) -> anyhow::Result<u8> {
    use ragmap::config::BlockPrivate;
    use ragmap::crawl::{self, CrawlOptions, Progress};
    let block_private = block_private.map(|b| match b.as_str() {
        "always" => BlockPrivate::Always,
        "never" => BlockPrivate::Never,
        _ => BlockPrivate::Auto,
    });
    let progress = if plain || !std::io::stderr().is_terminal() {
        Progress::Lines
    } else {
        Progress::Bar
    };
    let opts = CrawlOptions {
        roadmap,
        depth,
        progress,
        block_private,
    };
    let corpus = config.corpus_dir();
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("cannot create {}", corpus.display()))?;
    let _lock = ragmap::lock::Lock::acquire(&corpus, ".crawl.lock", "crawl")?;
    let rt = tokio::runtime::Runtime::new()?;
    let report = rt.block_on(crawl::crawl(config, &opts))?;
    println!("{}", sanitize(&report.summary()));
    println!("report: {}", crawl::report_path(config).display());
    Ok(if report.interrupted {
        exit::INTERRUPTED
    } else {
        0
    })
}

fn cmd_index(config: &Config, rebuild: bool, json: bool) -> anyhow::Result<u8> {
    let progress = std::io::stderr().is_terminal() && !json;
    let report = index::build(config, &BuildOptions { rebuild, progress })?;
    for s in &report.skipped {
        eprintln!(
            "warning: skipped corpus/{}: {}",
            sanitize(&s.rel_path),
            sanitize(&s.reason)
        );
    }
    if json {
        let mut value = serde_json::to_value(&report)?;
        value["skipped"] = report
            .skipped
            .iter()
            .map(|s| serde_json::json!({"path": s.rel_path, "reason": s.reason}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(0);
    }
    if let Some(reason) = &report.rebuilt {
        println!("rebuilding the whole index: {reason}");
    }
    let tokens_per_sec = if report.embed_seconds > 0.0 {
        report.tokens_embedded as f64 / report.embed_seconds
    } else {
        0.0
    };
    println!(
        "indexed {} documents: {} added, {} changed, {} deleted, {} unchanged; {} chunks embedded ({} tokens, {:.0} tokens/s) in {:.1}s",
        report.documents,
        report.added,
        report.changed,
        report.deleted,
        report.unchanged,
        report.chunks_embedded,
        report.tokens_embedded,
        tokens_per_sec,
        report.total_seconds
    );
    Ok(0)
}

fn cmd_search(
    config: &Config,
    question: &str,
    k: Option<usize>,
    mode: Option<RetrieveMode>,
    json: bool,
) -> anyhow::Result<u8> {
    let question = question.trim();
    if question.is_empty() {
        anyhow::bail!("the question is empty; pass some words, e.g. ragmap search \"什么是RAG\"");
    }
    let mode = mode.unwrap_or(config.retrieve.mode);
    let k = k.unwrap_or(config.retrieve.top_k).max(1);
    let hits = ask::open_retriever(config, mode)?
        .search(&[question.to_string()], mode, &config.retrieve, k)
        .context("search failed")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&hits)?);
    } else {
        print_hits(&hits)?;
    }
    Ok(0)
}

pub(crate) fn print_hits(hits: &[Hit]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if hits.is_empty() {
        writeln!(out, "no matching passages")?;
    }
    for (i, hit) in hits.iter().enumerate() {
        let c = &hit.chunk;
        writeln!(out, "[{}] {:.4}  {}", i + 1, hit.score, sanitize(&c.title))?;
        writeln!(out, "    {}", sanitize(&c.source))?;
        if !c.heading.is_empty() {
            writeln!(out, "    {}", sanitize(&c.heading))?;
        }
        writeln!(
            out,
            "    {}",
            sanitize(&ragmap::term::snippet(&c.text, 240))
        )?;
        writeln!(out)?;
    }
    Ok(())
}

fn cmd_status(config: &Config, json: bool) -> anyhow::Result<u8> {
    let crawl = ragmap::crawl::load_report(&ragmap::crawl::report_path(config));
    let status = index::status(config)?;
    if json {
        let mut value = serde_json::to_value(&status)?;
        value["crawl"] = match &crawl {
            Some(report) => serde_json::json!({
                "finished_at": report.finished_at,
                "interrupted": report.interrupted,
                "outcomes": report.counts().iter().map(|(k, v)| (k.as_str().to_string(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
            }),
            None => serde_json::Value::Null,
        };
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(0);
    }
    match &crawl {
        Some(report) => println!(
            "crawl:     {}",
            sanitize(&ragmap::crawl::status_line(report))
        ),
        None => println!("crawl:     none yet (ragmap crawl)"),
    }
    println!("index:     {}", config.index_dir().display());
    println!("documents: {}", status.documents);
    println!("chunks:    {} ({} tokens)", status.chunks, status.tokens);
    println!("size:      {:.1} MB", status.bytes_on_disk as f64 / 1e6);
    println!("model:     {}", status.model.as_deref().unwrap_or("?"));
    println!("chunking:  {}", status.settings.as_deref().unwrap_or("?"));
    println!("built:     {}", status.built_at.as_deref().unwrap_or("?"));
    if status.changed_since.is_empty() {
        println!("changes since the last build: none");
    } else {
        println!(
            "changes since the last build: {} (run `ragmap index`)",
            status.changed_since.len()
        );
        for c in status.changed_since.iter().take(20) {
            println!("  {}", sanitize(c));
        }
    }
    Ok(0)
}
