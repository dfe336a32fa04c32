//! `ragmap ask`: one question, answered with cited sources; the passages
//! alone when no model answers.

use std::time::Instant;

use anyhow::Context;
use ragmap::answer::{Preparation, Prepared};
use ragmap::cite::Citations;
use ragmap::config::Config;
use ragmap::exit;
use ragmap::llm::{ChatMessage, LlmError};
use ragmap::term::sanitize;

use super::output::{self, Streamed};
use super::setup;

/// How `ask` runs, from its flags.
pub struct Options {
    /// Print the prompt and stop.
    pub dry_run: bool,
    /// Translate the question and retrieve with both languages.
    pub translate: bool,
    /// Send retrieval to the workspace's running server when there is one.
    pub use_server: bool,
    /// Answer, sources and timings as one JSON document.
    pub json: bool,
}

pub fn run(config: &Config, question: &str, options: Options) -> anyhow::Result<u8> {
    let question = setup::question(question, "ask")?;
    let mut timings = Timings::start();
    let mut source = setup::PassageSource::open(config, options.use_server)?;
    let answerer = setup::answerer(config, options.translate)?;
    timings.set_up(answerer.translates());
    let rt = setup::runtime()?;
    let preparation = rt
        .block_on(answerer.prepare(&[], question, async |q| source.passages(q).await))
        .context("retrieval failed")?;
    timings.retrieved();
    let (mut prepared, no_model) = match preparation {
        Preparation::Ready(prepared) => (prepared, None),
        Preparation::NoModel(prepared, e) => (prepared, Some(e)),
    };
    say_what_was_retrieved(config, &prepared, &timings);
    if options.dry_run {
        return print_prompt(&answerer.messages(&prepared, &[]), &prepared, options.json);
    }
    if let Some(e) = no_model {
        return Ok(fallback(config, &prepared, &e, options.json));
    }
    timings.asking();
    let (streamed, shown) = rt.block_on(output::stream_answer(
        &answerer,
        &mut prepared,
        &[],
        !options.json,
    ));
    timings.answered(&streamed);
    output::verbose(format_args!(
        "asked {} at {} ms; first token at {} ms; done at {} ms",
        answerer.backend().base_url(),
        timings.answer_request_ms.unwrap_or(0),
        timings
            .first_token_ms
            .map_or_else(|| "-".to_string(), |t| t.to_string()),
        timings.total_ms
    ));
    let answer = Answer {
        prepared: &prepared,
        shown: &shown,
        timings: &timings,
    };
    match streamed {
        Streamed::Failed(e) if e.is_unreachable() => {
            Ok(fallback(config, &prepared, &e, options.json))
        }
        Streamed::Interrupted => {
            println!();
            eprintln!("interrupted");
            Ok(exit::INTERRUPTED)
        }
        streamed if options.json => answer.print_json(&streamed),
        streamed => Ok(answer.print_text(&streamed)),
    }
}

/// With `-v`: what was searched for and how long it took.
fn say_what_was_retrieved(config: &Config, prepared: &Prepared, timings: &Timings) {
    output::verbose(format_args!(
        "set up in {} ms; retrieved {} passages ({:?}, searched for {:?}{}) by {} ms",
        timings.setup_ms,
        prepared.hits.len(),
        config.retrieve.mode,
        prepared.query.search(),
        prepared
            .query
            .translation()
            .map(|t| format!(" and {t:?}"))
            .unwrap_or_default(),
        timings.retrieve_ms
    ));
}

/// An answer as it streamed, for the last lines `ask` prints.
struct Answer<'a> {
    prepared: &'a Prepared,
    shown: &'a str,
    timings: &'a Timings,
}

impl Answer<'_> {
    /// After the streamed text: the sources, and the error that cut it short.
    fn print_text(&self, streamed: &Streamed) -> u8 {
        let sources = &self.prepared.prompt.sources;
        match streamed {
            Streamed::Done(outcome) => {
                if !self.shown.ends_with('\n') {
                    println!();
                }
                if outcome.truncated() && !output::quiet() {
                    println!("(the answer reached max_answer_tokens and was cut)");
                }
                output::print_sources(self.shown, sources, &outcome.removed_citations);
                exit::SUCCESS
            }
            Streamed::Failed(e) => {
                if !self.shown.is_empty() {
                    println!();
                    output::print_sources(self.shown, sources, &[]);
                }
                eprintln!("error: {}", sanitize(&e.to_string()));
                e.exit_code()
            }
            Streamed::Interrupted => exit::INTERRUPTED,
        }
    }

    /// `--json`: the answer, its sources and timings, and any error.
    fn print_json(&self, streamed: &Streamed) -> anyhow::Result<u8> {
        let (error, code, removed) = match streamed {
            Streamed::Failed(e) => (Some(e.to_string()), e.exit_code(), &[][..]),
            Streamed::Done(o) => (None, exit::SUCCESS, &o.removed_citations[..]),
            Streamed::Interrupted => (None, exit::INTERRUPTED, &[][..]),
        };
        print_answer_json(
            self.prepared,
            self.shown,
            removed,
            self.timings,
            error.as_deref(),
        )?;
        if let Some(error) = error {
            eprintln!("error: {}", sanitize(&error));
        }
        Ok(code)
    }
}

/// `--dry-run`: the exact messages the model would get.
fn print_prompt(messages: &[ChatMessage], prepared: &Prepared, json: bool) -> anyhow::Result<u8> {
    if json {
        let value = serde_json::json!({
            "question": prepared.query.question(),
            "messages": messages,
            "sources": prepared.prompt.sources,
            "estimated_prompt_tokens": prepared.prompt.estimated_tokens,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        for m in messages {
            println!(
                "=== {} ===",
                serde_json::to_value(m.role)?.as_str().unwrap_or("?")
            );
            println!("{}\n", sanitize(&m.content));
        }
        println!(
            "=== (about {} prompt tokens) ===",
            prepared.prompt.estimated_tokens
        );
    }
    Ok(exit::SUCCESS)
}

/// No model answered: say so, and print the passages instead.
fn fallback(config: &Config, prepared: &Prepared, e: &LlmError, json: bool) -> u8 {
    output::no_model(config, e);
    if json {
        let error = e.to_string();
        let _ = print_answer_json(prepared, "", &[], &Timings::default(), Some(&error));
    } else {
        output::print_extractive(prepared);
    }
    e.exit_code()
}

/// `--json`: the answer (its text as shown, and the citations of no source
/// taken out of it) with its sources, citations, timings and error.
fn print_answer_json(
    prepared: &Prepared,
    text: &str,
    removed: &[usize],
    timings: &Timings,
    error: Option<&str>,
) -> anyhow::Result<()> {
    let citations = Citations::of(text, &prepared.prompt.sources).with_removed(removed);
    let value = serde_json::json!({
        "question": prepared.query.question(),
        "translated_question": prepared.query.translation(),
        "answer": text,
        "sources": prepared.prompt.sources,
        "cited": citations.cited.iter().map(|s| s.number).collect::<Vec<_>>(),
        // Of no source: taken out of `answer`.
        "invalid_citations": citations.invalid,
        "timings_ms": timings,
        "error": error,
    });
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

/// Milliseconds from the start of `ask` to each step (`--json`, `-v`).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Timings {
    #[serde(skip)]
    started: Option<Instant>,
    pub setup_ms: u64,
    pub first_request_ms: Option<u64>,
    pub retrieve_ms: u64,
    pub answer_request_ms: Option<u64>,
    pub first_token_ms: Option<u64>,
    pub total_ms: u64,
}

impl Timings {
    fn start() -> Timings {
        Timings {
            started: Some(Instant::now()),
            ..Timings::default()
        }
    }

    fn now(&self) -> u64 {
        self.started.map_or(0, |s| s.elapsed().as_millis() as u64)
    }

    /// Set-up is done; with translation, the first model request starts now.
    fn set_up(&mut self, translating: bool) {
        self.setup_ms = self.now();
        if translating {
            self.first_request_ms = Some(self.setup_ms);
        }
    }

    fn retrieved(&mut self) {
        self.retrieve_ms = self.now();
    }

    fn asking(&mut self) {
        let now = self.now();
        self.answer_request_ms = Some(now);
        self.first_request_ms.get_or_insert(now);
    }

    fn answered(&mut self, streamed: &Streamed) {
        if let Streamed::Done(outcome) = streamed {
            let asked = self.answer_request_ms.unwrap_or(0);
            self.first_token_ms = outcome
                .time_to_first_token
                .map(|d| asked + d.as_millis() as u64);
        }
        self.total_ms = self.now();
    }
}
