//! `ragmap chat`: follow-up questions in a conversation. Each follow-up is
//! rewritten into a standalone question for retrieval; the model sees the
//! user's own words and the recent turns.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use ragmap::answer::{Prepared, Turn};
use ragmap::config::Config;
use ragmap::exit;
use ragmap::prompt::Source;
use ragmap::term::sanitize;

use super::output::{self, Streamed};
use super::setup;

pub fn run(config: &Config, translate: bool, use_server: bool) -> anyhow::Result<u8> {
    let mut retriever = setup::Retrieval::open(config, use_server)?;
    let answerer = setup::answerer(config, translate)?;
    let rt = setup::runtime()?;
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("ragmap chat — ask about the roadmap's resources. /sources, /reset, /exit");
    }
    let mut history: Vec<Turn> = Vec::new();
    let mut last_sources: Vec<Source> = Vec::new();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("\n> ");
            let _ = std::io::stderr().flush();
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("cannot read standard input")?;
        let input = line.trim();
        match input {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history.clear();
                last_sources.clear();
                println!("(conversation cleared)");
                continue;
            }
            "/sources" => {
                if last_sources.is_empty() {
                    println!("(no sources yet)");
                }
                output::write_sources(&mut std::io::stdout().lock(), &last_sources);
                continue;
            }
            _ if input.starts_with('/') => {
                println!(
                    "(unknown command {}; use /sources, /reset or /exit)",
                    sanitize(input)
                );
                continue;
            }
            _ => {}
        }
        let rewrite = rt.block_on(answerer.query(&history, input));
        if let Some(search) = rewrite
            .query
            .rewritten_search()
            .filter(|_| !output::quiet())
        {
            eprintln!("(searching for: {})", sanitize(search));
        }
        let passages = retriever
            .passages(&rewrite.query)
            .context("retrieval failed")?;
        let prepared = Prepared::new(rewrite.query, passages, answerer.budget());
        let streamed = match rewrite.unreachable {
            Some(e) => {
                println!();
                Streamed::Failed(e)
            }
            None => {
                let (streamed, shown) =
                    rt.block_on(output::stream_answer(&answerer, &prepared, &history, false));
                println!();
                if let Streamed::Done(_) = streamed {
                    output::print_sources(&shown, &prepared.prompt.sources);
                    history.push(Turn {
                        question: input.to_string(),
                        answer: shown,
                    });
                }
                streamed
            }
        };
        match streamed {
            Streamed::Done(_) => {}
            Streamed::Failed(e) if e.is_unreachable() => {
                eprintln!(
                    "error: {}; {}",
                    sanitize(&e.to_string()),
                    setup::unreachable_hint(config)
                );
                output::print_extractive(&prepared);
            }
            Streamed::Failed(e) => eprintln!("error: {}", sanitize(&e.to_string())),
            Streamed::Interrupted => {
                eprintln!("(interrupted; /exit to leave)");
                continue;
            }
        }
        last_sources = prepared.prompt.sources;
    }
    Ok(exit::SUCCESS)
}
