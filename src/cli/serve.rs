//! `ragmap serve`: the resident server (see `ragmap::server`).

use ragmap::config::Config;
use ragmap::exit;
use ragmap::server;

use super::setup;

/// `ask`: a chat model is configured (MCP clients are offered `ask`).
/// `watch`: re-index the corpus as it changes (`--watch`).
pub fn run(config: &Config, ask: bool, watch: bool) -> anyhow::Result<u8> {
    let chat = format!("{} ({})", config.llm_base_url(), config.llm.model);
    setup::runtime()?.block_on(server::serve(config.clone(), ask, watch, |ready| {
        println!(
            "ragmap serve: listening on {} ({} documents, {} chunks, {} retrieval workers; answers from {chat})",
            ready.url, ready.documents, ready.chunks, ready.workers
        );
        println!(
            "  web page {0}/   OpenAI API {0}/v1   search {0}/api/search   MCP {0}/mcp   Ctrl-C stops",
            ready.url
        );
    }))?;
    Ok(exit::SUCCESS)
}
