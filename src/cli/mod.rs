//! The command line: the clap definition, flags resolved into the
//! configuration once, then one file per command. Commands return their exit
//! code; errors travel up to `main`, which prints them on one line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ragmap::config::{BlockPrivate, Config, Provider, RetrieveMode};

mod ask;
mod chat;
mod crawl;
mod eval;
mod index;
mod output;
mod roadmap;
mod search;
mod serve;
mod setup;
mod status;

#[derive(Parser)]
#[command(
    name = "ragmap",
    version,
    about = "Local RAG assistant over the AI-engineering roadmap's resources"
)]
pub struct Args {
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
        /// The question or keywords.
        question: String,
        #[command(flatten)]
        retrieve: RetrieveFlags,
        /// Print the passages as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Answer a question from the indexed resources, with cited sources.
    Ask {
        /// The question.
        question: String,
        #[command(flatten)]
        retrieve: RetrieveFlags,
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
        #[command(flatten)]
        retrieve: RetrieveFlags,
        /// Do not translate questions for cross-language retrieval.
        #[arg(long)]
        no_rewrite: bool,
        #[command(flatten)]
        llm: LlmFlags,
    },
    /// Serve an OpenAI-compatible API and a web page over this workspace
    /// (the model and index stay loaded; search, ask and chat use it).
    Serve {
        /// Address to listen on (default: [server] host, 127.0.0.1). Any other
        /// than loopback needs an API key in the variable [server] api_key_env names.
        #[arg(long)]
        host: Option<String>,
        /// Port (default: [server] port, 8765; 0 picks a free one).
        #[arg(long)]
        port: Option<u16>,
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
        /// Print the status as JSON.
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
        /// Refuse private and loopback addresses: auto (only when following
        /// links), always or never. Overrides [crawl] block_private.
        #[arg(long, value_enum)]
        block_private: Option<BlockPrivate>,
    },
}

/// Overrides of `[retrieve]` in config.toml.
#[derive(clap::Args)]
struct RetrieveFlags {
    /// Number of passages (default: [retrieve] top_k).
    #[arg(short, long)]
    k: Option<usize>,
    /// Retrieval mode (default: [retrieve] mode).
    #[arg(long, value_enum)]
    mode: Option<RetrieveMode>,
    /// Retrieve in this process even when `ragmap serve` runs for this workspace.
    #[arg(long)]
    no_server: bool,
}

/// Overrides of `[llm]` in config.toml.
#[derive(clap::Args)]
struct LlmFlags {
    /// openai (any OpenAI-compatible server) or ollama.
    #[arg(long, value_enum)]
    provider: Option<Provider>,
    /// Base URL, e.g. http://127.0.0.1:8080/v1 or http://127.0.0.1:11434.
    #[arg(long)]
    base_url: Option<String>,
    /// The model name the endpoint knows.
    #[arg(long)]
    model: Option<String>,
    /// Sampling temperature.
    #[arg(long)]
    temperature: Option<f32>,
    /// The model's context window in tokens.
    #[arg(long)]
    context_tokens: Option<usize>,
}

impl RetrieveFlags {
    fn apply(&self, config: &mut Config) {
        if let Some(k) = self.k {
            config.retrieve.top_k = k.max(1);
        }
        if let Some(mode) = self.mode {
            config.retrieve.mode = mode;
        }
    }
}

impl LlmFlags {
    fn apply(&self, config: &mut Config) {
        let llm = &mut config.llm;
        if let Some(p) = self.provider {
            llm.provider = p;
        }
        if let Some(u) = &self.base_url {
            llm.base_url = Some(u.clone());
        }
        if let Some(m) = &self.model {
            llm.model = m.clone();
        }
        if let Some(t) = self.temperature {
            llm.temperature = t;
        }
        if let Some(c) = self.context_tokens {
            llm.context_tokens = c;
        }
    }
}

impl Command {
    /// Applies the flags that override config.toml: the one place they meet
    /// the configuration, so commands read settings from `config` only.
    fn apply_overrides(&self, config: &mut Config) {
        match self {
            Command::Search { retrieve, .. } => retrieve.apply(config),
            Command::Ask { retrieve, llm, .. } | Command::Chat { retrieve, llm, .. } => {
                retrieve.apply(config);
                llm.apply(config);
            }
            Command::Eval { llm, .. } => llm.apply(config),
            Command::Serve { host, port, llm } => {
                if let Some(h) = host {
                    config.server.host = h.clone();
                }
                if let Some(p) = port {
                    config.server.port = *p;
                }
                llm.apply(config);
            }
            Command::Crawl {
                block_private: Some(b),
                ..
            } => config.crawl.block_private = *b,
            Command::Index { .. }
            | Command::Status { .. }
            | Command::Roadmap { .. }
            | Command::Crawl { .. } => {}
        }
    }
}

/// Loads the workspace's configuration, applies the flags, runs the command.
pub fn run(args: Args) -> anyhow::Result<u8> {
    let mut config = Config::load(&args.workspace)?;
    args.command.apply_overrides(&mut config);
    let config = &config;
    match args.command {
        Command::Index { rebuild, json } => index::run(config, rebuild, json),
        Command::Search {
            question,
            json,
            retrieve,
        } => search::run(config, &question, !retrieve.no_server, json),
        Command::Ask {
            question,
            dry_run,
            no_rewrite,
            json,
            retrieve,
            ..
        } => {
            let translate = !no_rewrite && !dry_run && config.llm.rewrite;
            let use_server = !retrieve.no_server;
            ask::run(config, &question, dry_run, translate, use_server, json)
        }
        Command::Chat {
            no_rewrite,
            retrieve,
            ..
        } => chat::run(
            config,
            !no_rewrite && config.llm.rewrite,
            !retrieve.no_server,
        ),
        Command::Serve { .. } => serve::run(config),
        Command::Eval {
            questions,
            compare,
            mode,
            json,
            answers,
            rewrite,
            ..
        } => {
            let options = ragmap::eval::RunOptions { rewrite, answers };
            eval::run(config, &questions, compare, mode, options, json)
        }
        Command::Status { json } => status::run(config, json),
        Command::Roadmap { src, out } => roadmap::run(config, &src, out),
        Command::Crawl {
            roadmap,
            depth,
            plain,
            ..
        } => crawl::run(config, roadmap, depth, plain),
    }
}
