//! `ragmap chat`: follow-up questions in a conversation. Each follow-up is
//! rewritten into a standalone question for retrieval; the model sees the
//! user's own words and the recent turns.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::Context;
use ragmap::answer::{Answerer, Preparation, Turn};
use ragmap::config::Config;
use ragmap::exit;
use ragmap::prompt::Source;
use ragmap::term::sanitize;

use super::output::{self, Streamed};
use super::setup;

pub fn run(config: &Config, translate: bool, use_server: bool) -> anyhow::Result<u8> {
    let mut chat = Conversation {
        config,
        source: setup::PassageSource::open(config, use_server)?,
        answerer: setup::answerer(config, translate)?,
        rt: setup::runtime()?,
        history: Vec::new(),
        last_sources: Vec::new(),
    };
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("ragmap chat — ask about the roadmap's resources. /sources, /reset, /exit");
    }
    let mut input_lines = Input::open(interactive);
    while let Some(line) = input_lines.next_line()? {
        match line.trim() {
            "" => {}
            "/exit" | "/quit" => break,
            "/reset" => chat.reset(),
            "/sources" => chat.print_sources(),
            command if command.starts_with('/') => println!(
                "(unknown command {}; use /sources, /reset or /exit)",
                sanitize(command)
            ),
            question => chat.ask(question)?,
        }
    }
    input_lines.close();
    Ok(exit::SUCCESS)
}

/// A conversation: what answers, and what was said so far.
struct Conversation<'c> {
    config: &'c Config,
    source: setup::PassageSource<'c>,
    answerer: Answerer,
    rt: tokio::runtime::Runtime,
    history: Vec<Turn>,
    last_sources: Vec<Source>,
}

impl Conversation<'_> {
    fn reset(&mut self) {
        self.history.clear();
        self.last_sources.clear();
        println!("(conversation cleared)");
    }

    fn print_sources(&self) {
        if self.last_sources.is_empty() {
            println!("(no sources yet)");
        }
        output::write_sources(&mut std::io::stdout().lock(), &self.last_sources);
    }

    /// Answers one question in the light of the conversation; the passages
    /// when no model answers. Only a retrieval failure ends the chat.
    fn ask(&mut self, question: &str) -> anyhow::Result<()> {
        let source = &mut self.source;
        let preparation = self
            .rt
            .block_on(
                self.answerer
                    .prepare(&self.history, question, async |q| source.passages(q).await),
            )
            .context("retrieval failed")?;
        let (mut prepared, no_model) = match preparation {
            Preparation::Ready(prepared) => (prepared, None),
            Preparation::NoModel(prepared, e) => (prepared, Some(e)),
        };
        if let Some(search) = prepared
            .query
            .rewritten_search()
            .filter(|_| !output::quiet())
        {
            eprintln!("(searching for: {})", sanitize(search));
        }
        let (streamed, shown) = match no_model {
            Some(e) => (Streamed::Failed(e), String::new()),
            None => self.rt.block_on(output::stream_answer(
                &self.answerer,
                &mut prepared,
                &self.history,
                true,
            )),
        };
        println!();
        match streamed {
            Streamed::Done(outcome) => {
                output::print_sources(&shown, &prepared.prompt.sources, &outcome.removed_citations);
                self.history.push(Turn {
                    question: question.to_string(),
                    answer: shown,
                });
            }
            Streamed::Failed(e) if e.is_unreachable() => {
                output::no_model(self.config, &e);
                output::print_extractive(&prepared);
            }
            Streamed::Failed(e) => eprintln!("error: {}", sanitize(&e.to_string())),
            Streamed::Interrupted => {
                eprintln!("(interrupted; /exit to leave)");
                return Ok(());
            }
        }
        self.last_sources = prepared.prompt.sources;
        Ok(())
    }
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
