//! `ragmap search`: the passages that best match a question, no model.

use anyhow::Context;
use ragmap::config::Config;
use ragmap::exit;
use ragmap::query::Query;

use super::{output, setup};

pub fn run(config: &Config, question: &str, use_server: bool, json: bool) -> anyhow::Result<u8> {
    let question = setup::question(question, "search")?;
    let mut source = setup::PassageSource::open(config, use_server)?;
    let hits = setup::runtime()?
        .block_on(source.search(&Query::new(question)))
        .context("search failed")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&hits)?);
    } else {
        output::print_hits(&hits)?;
    }
    Ok(exit::SUCCESS)
}
