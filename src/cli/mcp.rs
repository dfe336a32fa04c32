//! `ragmap mcp`: the MCP server on standard input and output (see
//! `ragmap::server::serve_stdio`). Standard output carries protocol
//! messages only; everything said to a person goes to standard error.

use ragmap::config::Config;
use ragmap::exit;
use ragmap::server;

use super::{output, setup};

/// `ask`: a chat model is configured (the client is offered `ask`).
pub fn run(config: &Config, ask: bool) -> anyhow::Result<u8> {
    if !output::quiet() {
        let tools = if ask {
            "search, fetch, ask"
        } else {
            "search, fetch"
        };
        eprintln!(
            "ragmap mcp: tools {tools} over standard input/output, workspace {}",
            config.workspace.display()
        );
    }
    setup::runtime()?.block_on(server::serve_stdio(config.clone(), ask))?;
    Ok(exit::SUCCESS)
}
