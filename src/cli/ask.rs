//! `ragmap ask`: one question, answered with cited sources; the passages
//! alone when no model answers.

use anyhow::Context;
use ragmap::answer::{Clock, Prepared, Timings};
use ragmap::config::Config;
use ragmap::exit;
use ragmap::llm::LlmError;
use ragmap::term::sanitize;

use super::output::{self, Streamed};
use super::setup;

pub fn run(
    config: &Config,
    question: &str,
    dry_run: bool,
    translate: bool,
    use_server: bool,
    json: bool,
) -> anyhow::Result<u8> {
    let question = setup::question(question, "ask")?;
    let clock = Clock::start();
    let mut timings = Timings::default();
    let mut retriever = setup::Retrieval::open(config, use_server)?;
    let answerer = setup::answerer(config, translate)?;
    timings.setup_ms = clock.ms();
    let rt = setup::runtime()?;

    if answerer.translates() {
        timings.first_request_ms = Some(clock.ms());
    }
    let rewrite = rt.block_on(answerer.query(&[], question));
    let passages = retriever
        .passages(&rewrite.query)
        .context("retrieval failed")?;
    let prepared = Prepared::new(rewrite.query, passages, rt.block_on(answerer.budget()));
    timings.retrieve_ms = clock.ms();
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

    if dry_run {
        return print_prompt(&answerer.messages(&prepared, &[]), &prepared, json);
    }
    // An endpoint that did not answer the translation would not answer now.
    if let Some(e) = rewrite.unreachable {
        return Ok(fallback(config, &prepared, &e, json));
    }
    timings.answer_request_ms = Some(clock.ms());
    timings.first_request_ms.get_or_insert(clock.ms());
    let (streamed, shown) = rt.block_on(output::stream_answer(&answerer, &prepared, &[], json));
    let answer_started = timings.answer_request_ms.unwrap_or(0);
    match streamed {
        Streamed::Done(outcome) => {
            timings.first_token_ms = outcome
                .time_to_first_token
                .map(|d| answer_started + d.as_millis() as u64);
            timings.total_ms = clock.ms();
            output::verbose(format_args!(
                "asked {} at {} ms; first token at {} ms; done at {} ms",
                answerer.backend().base_url(),
                answer_started,
                timings
                    .first_token_ms
                    .map_or_else(|| "-".to_string(), |t| t.to_string()),
                timings.total_ms
            ));
            if json {
                output::print_answer_json(&prepared, &shown, &timings, None)?;
            } else {
                if !shown.ends_with('\n') {
                    println!();
                }
                if outcome.truncated() && !output::quiet() {
                    println!("(the answer reached max_answer_tokens and was cut)");
                }
                output::print_sources(&shown, &prepared.prompt.sources);
            }
            Ok(exit::SUCCESS)
        }
        Streamed::Failed(e) if e.is_unreachable() => Ok(fallback(config, &prepared, &e, json)),
        Streamed::Failed(e) => {
            timings.total_ms = clock.ms();
            if json {
                output::print_answer_json(&prepared, &shown, &timings, Some(&e.to_string()))?;
            } else if !shown.is_empty() {
                println!();
                output::print_sources(&shown, &prepared.prompt.sources);
            }
            eprintln!("error: {}", sanitize(&e.to_string()));
            Ok(e.exit_code())
        }
        Streamed::Interrupted => {
            println!();
            eprintln!("interrupted");
            Ok(exit::INTERRUPTED)
        }
    }
}

/// `--dry-run`: the exact messages the model would get.
fn print_prompt(
    messages: &[ragmap::llm::ChatMessage],
    prepared: &Prepared,
    json: bool,
) -> anyhow::Result<u8> {
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
    eprintln!(
        "error: {}; {}",
        sanitize(&e.to_string()),
        setup::unreachable_hint(config)
    );
    if json {
        let _ = output::print_answer_json(prepared, "", &Timings::default(), Some(&e.to_string()));
    } else {
        output::print_extractive(prepared);
    }
    e.exit_code()
}
