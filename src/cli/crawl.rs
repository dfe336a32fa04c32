//! `ragmap crawl`: fetch the roadmap's resources into corpus/web/.

use std::io::IsTerminal;

use anyhow::Context;
use ragmap::config::Config;
use ragmap::crawl::{self, CrawlOptions, Progress};
use ragmap::exit;
use ragmap::term::sanitize;

use super::setup;

pub fn run(
    config: &Config,
    roadmap: Option<String>,
    depth: u32,
    plain: bool,
) -> anyhow::Result<u8> {
    let progress = if plain || !std::io::stderr().is_terminal() {
        Progress::Lines
    } else {
        Progress::Bar
    };
    let opts = CrawlOptions {
        roadmap,
        depth,
        progress,
        block_private: None,
    };
    let corpus = config.corpus_dir();
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("cannot create {}", corpus.display()))?;
    let _lock = ragmap::lock::Lock::acquire(&corpus, ".crawl.lock", "crawl")?;
    let report = setup::runtime()?.block_on(crawl::crawl(config, &opts))?;
    println!("{}", sanitize(&report.summary()));
    println!("report: {}", crawl::report_path(config).display());
    Ok(if report.interrupted {
        exit::INTERRUPTED
    } else {
        exit::SUCCESS
    })
}
