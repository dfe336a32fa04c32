//! `ragmap chat`: follow-up questions in a conversation. Each follow-up is
//! rewritten into a standalone question for retrieval; the model sees the
//! user's own words and the recent turns.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

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
    let mut input_lines = Input::open(interactive);
    loop {
        let Some(line) = input_lines.next_line()? else {
            break;
        };
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
        let prepared = Prepared::new(rewrite.query, passages, rt.block_on(answerer.budget()));
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
    input_lines.close();
    Ok(exit::SUCCESS)
}

/// Where questions come from: a line editor at a terminal (editing, history
/// kept between sessions, Ctrl-C clears the line, Ctrl-D leaves), else plain
/// lines from a pipe or file.
enum Input {
    Editor {
        editor: Box<rustyline::DefaultEditor>,
        history: Option<PathBuf>,
    },
    Lines(std::io::Lines<std::io::StdinLock<'static>>),
}

impl Input {
    fn open(interactive: bool) -> Input {
        let lines = || Input::Lines(std::io::stdin().lock().lines());
        if !interactive {
            return lines();
        }
        let config = rustyline::Config::builder()
            .max_history_size(1000)
            .map(|b| b.auto_add_history(true).build())
            .unwrap_or_default();
        // A terminal the editor cannot drive still gets plain lines.
        let Ok(mut editor) = rustyline::DefaultEditor::with_config(config) else {
            return lines();
        };
        let history = history_file();
        if let Some(path) = &history {
            let _ = editor.load_history(path);
        }
        Input::Editor {
            editor: Box::new(editor),
            history,
        }
    }

    /// The next line; `None` at the end of input (Ctrl-D, end of the pipe).
    fn next_line(&mut self) -> anyhow::Result<Option<String>> {
        use rustyline::error::ReadlineError;
        match self {
            Input::Lines(lines) => match lines.next() {
                None => Ok(None),
                Some(line) => Ok(Some(line.context("cannot read standard input")?)),
            },
            Input::Editor { editor, .. } => loop {
                println!();
                match editor.readline("> ") {
                    Ok(line) => return Ok(Some(line)),
                    // Ctrl-C at the prompt drops the line, as a shell does.
                    Err(ReadlineError::Interrupted) => continue,
                    Err(ReadlineError::Eof) => return Ok(None),
                    Err(e) => return Err(anyhow::anyhow!("cannot read the terminal: {e}")),
                }
            },
        }
    }

    /// Saves the history; a history that cannot be written is not worth an error.
    fn close(&mut self) {
        if let Input::Editor {
            editor,
            history: Some(path),
        } = self
        {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = editor.save_history(path);
        }
    }
}

/// `$RAGMAP_CHAT_HISTORY`, else the user's data folder
/// (`~/.local/share/ragmap/chat-history` on Linux); `RAGMAP_CHAT_HISTORY=` (empty) keeps none.
fn history_file() -> Option<PathBuf> {
    match std::env::var_os("RAGMAP_CHAT_HISTORY") {
        Some(v) if v.is_empty() => None,
        Some(v) => Some(PathBuf::from(v)),
        None => dirs::data_dir().map(|d| d.join("ragmap").join("chat-history")),
    }
}
