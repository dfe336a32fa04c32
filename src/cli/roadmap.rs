//! `ragmap roadmap`: the roadmap article's resource list, as corpus/roadmap.md.

use std::path::{Path, PathBuf};

use anyhow::Context;
use ragmap::config::Config;
use ragmap::exit;

pub fn run(config: &Config, src: &Path, out: Option<PathBuf>) -> anyhow::Result<u8> {
    let text =
        std::fs::read_to_string(src).with_context(|| format!("cannot read {}", src.display()))?;
    let out = out.unwrap_or_else(|| config.corpus_dir().join("roadmap.md"));
    let doc = ragmap::roadmap::build_resource_list(&text);
    ragmap::corpus::write_atomic(&out, doc.as_bytes())
        .with_context(|| format!("cannot write {}", out.display()))?;
    let n = ragmap::roadmap::parse(&text).resources.len();
    println!("wrote {} ({n} resources)", out.display());
    Ok(exit::SUCCESS)
}
