//! Minimal CLI for trying the roadmap and crawl stages (the lead owns the real one).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use ragmap::config::{BlockPrivate, Config};
use ragmap::crawl::{self, CrawlOptions, Progress};

#[derive(Parser)]
#[command(name = "ragmap", version, about)]
struct Cli {
    /// Workspace directory (holds config.toml and the corpus).
    #[arg(long, global = true, default_value = ".")]
    workspace: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the roadmap's resource list (headings and links only) to corpus/roadmap.md.
    Roadmap {
        /// The roadmap article (markdown).
        src: PathBuf,
        /// Output file; default <corpus>/roadmap.md.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Fetch every roadmap resource into <corpus>/web/.
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(&cli.workspace)?;
    match cli.command {
        Command::Roadmap { src, out } => {
            let text = std::fs::read_to_string(&src)
                .with_context(|| format!("cannot read {}", src.display()))?;
            let out = out.unwrap_or_else(|| config.corpus_dir().join("roadmap.md"));
            let doc = ragmap::roadmap::build_resource_list(&text);
            ragmap::corpus::write_atomic(&out, doc.as_bytes())
                .with_context(|| format!("cannot write {}", out.display()))?;
            let n = ragmap::roadmap::parse(&text).resources.len();
            println!("wrote {} ({n} resources)", out.display());
        }
        Command::Crawl {
            roadmap,
            depth,
            plain,
            block_private,
        } => {
            let progress = if plain || !std::io::stderr().is_terminal() {
                Progress::Lines
            } else {
                Progress::Bar
            };
            let block_private = block_private.map(|b| match b.as_str() {
                "always" => BlockPrivate::Always,
                "never" => BlockPrivate::Never,
                _ => BlockPrivate::Auto,
            });
            let opts = CrawlOptions {
                roadmap,
                depth,
                progress,
                block_private,
            };
            let report = crawl::crawl(&config, &opts).await?;
            println!("{}", report.summary());
            println!("report: {}", crawl::report_path(&config).display());
        }
    }
    Ok(())
}
