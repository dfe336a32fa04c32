//! `ragmap models`: the model ids the chat endpoint offers, one a line.

use anyhow::Context;
use ragmap::config::Config;
use ragmap::llm;
use ragmap::term::sanitize;

use super::{output, setup};

pub fn run(config: &Config) -> anyhow::Result<u8> {
    let backend = llm::backend_from_config(config)?;
    let timeout = std::time::Duration::from_secs(10);
    output::verbose(format_args!(
        "listing the models of {} ({})",
        backend.base_url(),
        config.llm.provider.name()
    ));
    let listed = setup::runtime()?.block_on(backend.models(timeout));
    let ids = match listed {
        Ok(ids) => ids,
        Err(e) if e.is_unreachable() => {
            output::no_model(config, &e);
            return Ok(e.exit_code());
        }
        Err(e) => {
            eprintln!("error: {}", sanitize(&e.to_string()));
            return Ok(e.exit_code());
        }
    };
    if ids.is_empty() && !output::quiet() {
        eprintln!("{} lists no models", backend.base_url());
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for id in &ids {
        writeln!(out, "{}", sanitize(id)).context("cannot write to standard output")?;
    }
    Ok(ragmap::exit::SUCCESS)
}
