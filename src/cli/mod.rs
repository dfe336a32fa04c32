//! The command line: the clap definition, flags resolved into the
//! configuration once, then one file per command. Commands return their exit
//! code; errors travel up to `main`, which prints them on one line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ragmap::config::{BlockPrivate, Config, Found, Origin, Provider, RetrieveMode};
use ragmap::exit;

mod ask;
mod chat;
mod crawl;
mod effective;
mod eval;
mod index;
mod manual;
mod mcp;
mod models;
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
    /// Workspace directory holding config.toml, corpus/ and index/ [env:
    /// RAGMAP_HOME] (default: the nearest folder upwards holding config.toml,
    /// or corpus/ and index/; else the current folder).
    #[arg(long, short = 'C', global = true, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Print the answer only: no progress, hints or source list.
    #[arg(long, short, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Also say which steps ran and how long each took (on stderr).
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Chunk, embed and index corpus/ (incremental: only changed documents are re-embedded).
    Index {
        /// Discard the existing index and build it again from scratch.
        #[arg(long, conflicts_with = "to")]
        rebuild: bool,
        /// Copy the index (with its vectors: nothing is embedded again) to a
        /// postgres:// URL or a folder, replacing the index there; the corpus is not read.
        #[arg(long, value_name = "URL|DIR", conflicts_with = "watch")]
        to: Option<String>,
        /// Print a JSON report instead of text.
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        #[command(flatten)]
        watch: WatchFlags,
        #[command(flatten)]
        index: IndexFlags,
    },
    /// Show the passages that best match a question.
    Search {
        /// The question or keywords (several words are joined; `-` reads standard input).
        #[arg(required = true, num_args = 1..)]
        question: Vec<String>,
        #[command(flatten)]
        retrieve: RetrieveFlags,
        /// Print the passages as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        index: IndexFlags,
    },
    /// Answer a question from the indexed resources, with cited sources.
    Ask {
        /// The question: `ragmap ask what is LoRA`, quoted or not; `-` reads standard input.
        #[arg(required = true, num_args = 1..)]
        question: Vec<String>,
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
        #[command(flatten)]
        index: IndexFlags,
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
        #[command(flatten)]
        index: IndexFlags,
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
        watch: WatchFlags,
        #[command(flatten)]
        llm: LlmFlags,
        #[command(flatten)]
        index: IndexFlags,
    },
    /// Serve the knowledge base to MCP clients (Claude Desktop, Cursor, Cherry
    /// Studio, …) on standard input/output: tools search, fetch, and ask when a
    /// chat model is configured. `ragmap serve` offers the same at /mcp.
    Mcp {
        #[command(flatten)]
        llm: LlmFlags,
        #[command(flatten)]
        index: IndexFlags,
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
        #[command(flatten)]
        index: IndexFlags,
    },
    /// List the models the chat endpoint offers, one id per line.
    Models {
        #[command(flatten)]
        endpoint: EndpointFlags,
    },
    /// Show the configuration in effect as TOML, each value with where it came
    /// from (default, config.toml, environment, flag).
    Config {
        /// Also ask the chat endpoint whether it answers and which models it has.
        #[arg(long)]
        check: bool,
        #[command(flatten)]
        retrieve: RetrieveFlags,
        #[command(flatten)]
        llm: LlmFlags,
        #[command(flatten)]
        index: IndexFlags,
    },
    /// Print a shell completion script: `ragmap completions bash > ~/.local/share/bash-completion/completions/ragmap`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff); with --dir, write one page per command there.
    Man {
        /// Write ragmap.1 and ragmap-COMMAND.1 into this folder instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Show what is indexed and what changed since.
    Status {
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        index: IndexFlags,
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
    /// Number of passages (default: [retrieve] top_k) [env: RAGMAP_RETRIEVE_TOP_K].
    #[arg(short, long)]
    k: Option<usize>,
    /// Retrieval mode (default: [retrieve] mode) [env: RAGMAP_RETRIEVE_MODE].
    #[arg(long, value_enum)]
    mode: Option<RetrieveMode>,
    /// Retrieve in this process even when `ragmap serve` runs for this workspace.
    #[arg(long)]
    no_server: bool,
}

/// `--watch`, and `--poll` overriding `[watch] poll`.
#[derive(clap::Args)]
struct WatchFlags {
    /// Keep watching corpus/ and re-index what changes (created, edited,
    /// renamed and deleted .md files); Ctrl-C stops.
    #[arg(long)]
    watch: bool,
    /// With --watch: look for changes every [watch] poll_ms instead of
    /// waiting for file-system events (for file systems that send none).
    #[arg(long, requires = "watch")]
    poll: bool,
}

impl WatchFlags {
    fn apply(&self, config: &mut Config) {
        if self.poll {
            config.watch.poll = ragmap::config::Poll::Always;
            config.set_by_flag("watch.poll", "--poll");
        }
    }
}

/// Where the index is: an override of `[index] url`.
#[derive(clap::Args)]
struct IndexFlags {
    /// The index in this PostgreSQL database (postgres://USER@HOST:PORT/DB)
    /// instead of the embedded one [env: RAGMAP_INDEX_URL].
    #[arg(long, value_name = "URL")]
    index_url: Option<String>,
}

impl IndexFlags {
    fn apply(&self, config: &mut Config) {
        if let Some(url) = &self.index_url {
            config.index.url = Some(url.clone());
            config.set_by_flag("index.url", "--index-url");
        }
    }
}

/// Which chat endpoint: overrides of `[llm]` provider and base_url.
#[derive(clap::Args)]
struct EndpointFlags {
    /// openai (any OpenAI-compatible server) or ollama [env: RAGMAP_LLM_PROVIDER].
    #[arg(long, value_enum)]
    provider: Option<Provider>,
    /// Base URL, e.g. http://127.0.0.1:8080/v1 or http://127.0.0.1:11434
    /// [env: RAGMAP_LLM_BASE_URL, RAGMAP_LLM_URL; unset: OPENAI_BASE_URL or OLLAMA_HOST].
    #[arg(long)]
    base_url: Option<String>,
}

/// Overrides of `[llm]` in config.toml.
#[derive(clap::Args)]
struct LlmFlags {
    #[command(flatten)]
    endpoint: EndpointFlags,
    /// The model name the endpoint knows (`ragmap models` lists them) [env: RAGMAP_LLM_MODEL].
    #[arg(long, short)]
    model: Option<String>,
    /// Sampling temperature [env: RAGMAP_LLM_TEMPERATURE].
    #[arg(long)]
    temperature: Option<f32>,
    /// The model's context window in tokens [env: RAGMAP_LLM_CONTEXT_TOKENS].
    #[arg(long)]
    context_tokens: Option<usize>,
}

impl RetrieveFlags {
    fn apply(&self, config: &mut Config) {
        if let Some(k) = self.k {
            config.retrieve.top_k = k.max(1);
            config.set_by_flag("retrieve.top_k", "-k");
        }
        if let Some(mode) = self.mode {
            config.retrieve.mode = mode;
            config.set_by_flag("retrieve.mode", "--mode");
        }
    }
}

impl EndpointFlags {
    fn apply(&self, config: &mut Config) {
        if let Some(p) = self.provider {
            config.llm.provider = p;
            config.set_by_flag("llm.provider", "--provider");
        }
        if let Some(u) = &self.base_url {
            config.llm.base_url = Some(u.clone());
            config.set_by_flag("llm.base_url", "--base-url");
        }
    }
}

impl LlmFlags {
    fn apply(&self, config: &mut Config) {
        self.endpoint.apply(config);
        if let Some(m) = &self.model {
            config.llm.model = m.clone();
            config.set_by_flag("llm.model", "--model");
        }
        if let Some(t) = self.temperature {
            config.llm.temperature = t;
            config.set_by_flag("llm.temperature", "--temperature");
        }
        if let Some(c) = self.context_tokens {
            config.llm.context_tokens = c;
            config.set_by_flag("llm.context_tokens", "--context-tokens");
        }
    }
}

impl Command {
    /// Whether the command calls the chat model, so that `provider = "auto"`
    /// must be settled first.
    fn talks_to_model(&self) -> bool {
        match self {
            Command::Ask { dry_run, .. } => !dry_run,
            Command::Eval {
                answers, rewrite, ..
            } => *answers || *rewrite,
            Command::Config { check, .. } => *check,
            Command::Chat { .. }
            | Command::Serve { .. }
            | Command::Mcp { .. }
            | Command::Models { .. } => true,
            _ => false,
        }
    }

    /// Applies the flags that override config.toml: the one place they meet
    /// the configuration, so commands read settings from `config` only.
    fn apply_overrides(&self, config: &mut Config) {
        if let Some(index) = self.index_flags() {
            index.apply(config);
        }
        match self {
            Command::Search { retrieve, .. } => retrieve.apply(config),
            Command::Ask { retrieve, llm, .. } | Command::Chat { retrieve, llm, .. } => {
                retrieve.apply(config);
                llm.apply(config);
            }
            Command::Eval { llm, .. } | Command::Mcp { llm, .. } => llm.apply(config),
            Command::Models { endpoint } => endpoint.apply(config),
            Command::Config { retrieve, llm, .. } => {
                retrieve.apply(config);
                llm.apply(config);
            }
            Command::Serve {
                host,
                port,
                llm,
                watch,
                ..
            } => {
                watch.apply(config);
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
            } => {
                config.crawl.block_private = *b;
                config.set_by_flag("crawl.block_private", "--block-private");
            }
            Command::Index { watch, .. } => watch.apply(config),
            Command::Completions { .. }
            | Command::Man { .. }
            | Command::Status { .. }
            | Command::Roadmap { .. }
            | Command::Crawl { .. } => {}
        }
    }

    /// The `--index-url` of the commands that take an index.
    fn index_flags(&self) -> Option<&IndexFlags> {
        match self {
            Command::Index { index, .. }
            | Command::Search { index, .. }
            | Command::Ask { index, .. }
            | Command::Chat { index, .. }
            | Command::Serve { index, .. }
            | Command::Mcp { index, .. }
            | Command::Eval { index, .. }
            | Command::Config { index, .. }
            | Command::Status { index, .. } => Some(index),
            _ => None,
        }
    }
}

/// Finds the workspace, loads its configuration, applies the flags, runs the command.
pub fn run(args: Args) -> anyhow::Result<u8> {
    output::set_verbosity(if args.quiet {
        output::Verbosity::Quiet
    } else if args.verbose {
        output::Verbosity::Verbose
    } else {
        output::Verbosity::Normal
    });
    // These need no workspace: they print what the clap definition says.
    match &args.command {
        Command::Completions { shell } => return manual::completions(*shell),
        Command::Man { dir } => return manual::man(dir.as_deref()),
        _ => {}
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let home = std::env::var("RAGMAP_HOME").ok();
    let (workspace, found) =
        ragmap::config::find_workspace(args.workspace.as_deref(), home.as_deref(), &cwd);
    let mut config = Config::load(&workspace)?;
    args.command.apply_overrides(&mut config);
    let chat = settle_model(&args.command, &mut config)?;
    if found != Found::Flag {
        output::verbose(format_args!("workspace {} ({found})", workspace.display()));
    }
    args.command.run(&config, &workspace, found, chat)
}

impl Command {
    /// Runs the command with the configuration its flags already shaped.
    /// `chat`: whether a chat model is configured or was found (`serve` and
    /// `mcp` offer answers only then).
    fn run(
        self,
        config: &Config,
        workspace: &std::path::Path,
        found: Found,
        chat: bool,
    ) -> anyhow::Result<u8> {
        match self {
            Command::Index {
                rebuild,
                to,
                json,
                watch,
                ..
            } => index_command(config, rebuild, to.as_deref(), json, watch.watch),
            Command::Search {
                question,
                json,
                retrieve,
                ..
            } => {
                let question = setup::question_words(&question)?;
                search::run(config, &question, !retrieve.no_server, json)
            }
            Command::Ask {
                question,
                dry_run,
                no_rewrite,
                json,
                retrieve,
                ..
            } => {
                let question = setup::question_words(&question)?;
                let options = ask::Options {
                    dry_run,
                    translate: !no_rewrite && !dry_run && config.llm.rewrite,
                    use_server: !retrieve.no_server,
                    json,
                };
                ask::run(config, &question, options)
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
            Command::Serve { watch, .. } => serve::run(config, chat, watch.watch),
            Command::Mcp { .. } => mcp::run(config, chat),
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
            Command::Models { .. } => models::run(config),
            Command::Config { check, .. } => effective::run(config, workspace, found, check),
            Command::Completions { .. } | Command::Man { .. } => Ok(exit::SUCCESS),
            Command::Status { json, .. } => status::run(config, json),
            Command::Roadmap { src, out } => roadmap::run(config, &src, out),
            Command::Crawl {
                roadmap,
                depth,
                plain,
                ..
            } => crawl::run(config, roadmap, depth, plain),
        }
    }
}

/// `ragmap index`: a copy elsewhere (`--to`), a watcher (`--watch`), or one run.
fn index_command(
    config: &Config,
    rebuild: bool,
    to: Option<&str>,
    json: bool,
    watch: bool,
) -> anyhow::Result<u8> {
    match to {
        Some(to) => index::copy(config, to, json),
        None if watch => index::watch(config, rebuild),
        None => index::run(config, rebuild, json),
    }
}

/// Settles `provider = "auto"` for the commands that call the model (saying
/// what it picked); whether a chat model is configured or was found.
fn settle_model(command: &Command, config: &mut Config) -> anyhow::Result<bool> {
    let mut picked = None;
    if command.talks_to_model() {
        picked = setup::runtime()?.block_on(ragmap::llm::resolve_auto(config));
        if let Some(line) = picked.as_ref().filter(|_| !output::quiet()) {
            eprintln!("ragmap: {line}");
        }
    }
    Ok(picked.is_some() || chat_configured(config))
}

/// Whether the configuration names a chat model (endpoint, provider or
/// model set anywhere), as opposed to the defaults `provider = "auto"` falls
/// back to when nothing answers.
fn chat_configured(config: &Config) -> bool {
    config.llm_endpoint_configured()
        || ["llm.provider", "llm.model", "llm.base_url"]
            .iter()
            .any(|key| config.origin(key) != Origin::Default)
}

/// The exit code of the first error in `err`'s chain that classifies itself
/// (see `ragmap::exit`), else [`exit::FAILURE`].
pub fn exit_code(err: &(dyn std::error::Error + 'static)) -> u8 {
    use ragmap::{embed::EmbedError, index::IndexError, retrieve::RetrieveError};
    let mut next = Some(err);
    while let Some(e) = next {
        let code = if let Some(e) = e.downcast_ref::<EmbedError>() {
            Some(e.exit_code())
        } else if let Some(e) = e.downcast_ref::<IndexError>() {
            Some(e.exit_code())
        } else if let Some(e) = e.downcast_ref::<RetrieveError>() {
            Some(e.exit_code())
        } else {
            e.downcast_ref::<ragmap::server::ServeError>()
                .map(|e| e.exit_code())
        };
        if let Some(code) = code {
            return code;
        }
        next = e.source();
    }
    exit::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;
    use ragmap::embed::EmbedError;
    use ragmap::index::IndexError;
    use ragmap::retrieve::RetrieveError;

    #[test]
    fn wrapped_errors_are_classified_by_the_innermost_kind_that_knows() {
        let missing_model = || EmbedError::MissingModel(PathBuf::from("m"));
        assert_eq!(exit_code(&missing_model()), exit::SETUP);
        assert_eq!(exit_code(&IndexError::Embed(missing_model())), exit::SETUP);
        assert_eq!(
            exit_code(&RetrieveError::Embed(missing_model())),
            exit::SETUP
        );
        let missing_index = RetrieveError::Open(IndexError::Missing(PathBuf::from("i")));
        assert_eq!(exit_code(&missing_index), exit::INDEX);
        let wrapped = anyhow::Error::new(missing_index).context("retrieval failed");
        assert_eq!(exit_code(wrapped.as_ref()), exit::INDEX);
        assert_eq!(exit_code(&EmbedError::Run("x".into())), exit::FAILURE);
        assert_eq!(exit_code(&RetrieveError::Search("x".into())), exit::FAILURE);
        assert_eq!(exit_code(&std::io::Error::other("disk")), exit::FAILURE);
    }
}
