//! `ragmap eval`: loads what the evaluation needs (the model endpoint only
//! when translating or answering), runs it with a progress bar, prints the
//! table or the JSON report.

use std::io::IsTerminal;
use std::path::Path;

use ragmap::config::{Config, RetrieveMode};
use ragmap::eval::{self, EvalError, RunOptions};
use ragmap::exit;
use ragmap::term::sanitize;

use super::setup;

pub fn run(
    config: &Config,
    questions: &Path,
    compare: Option<String>,
    mode: Option<RetrieveMode>,
    options: RunOptions,
    json: bool,
) -> anyhow::Result<u8> {
    let questions = eval::load_questions(questions)?;
    let spec = match (compare, mode) {
        (Some(spec), _) => spec,
        (None, Some(mode)) => eval::mode_name(mode).to_string(),
        (None, None) => eval::mode_name(config.retrieve.mode).to_string(),
    };
    let variants = eval::parse_variants(&spec, &config.retrieve)?;
    // The embedding model is loaded only when some variant needs it.
    let mut load = config.clone();
    load.retrieve.mode = if variants
        .iter()
        .all(|v| v.settings.mode == RetrieveMode::Lexical)
    {
        RetrieveMode::Lexical
    } else {
        RetrieveMode::Hybrid
    };
    let mut retriever = setup::retriever(&load)?;
    let answerer = if options.rewrite || options.answers {
        Some(setup::answerer(config, options.rewrite)?)
    } else {
        None
    };
    let rt = setup::runtime()?;

    // Answers take seconds each: show progress on a terminal.
    let total =
        questions.len() * variants.len() + if options.rewrite { questions.len() } else { 0 };
    let bar = if (options.answers || options.rewrite) && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(total as u64);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("eval {bar:30} {pos}/{len} {elapsed}")
        {
            bar.set_style(style);
        }
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut tick = || bar.inc(1);
    let result = rt.block_on(eval::run(
        &mut retriever,
        answerer.as_ref(),
        &questions,
        &variants,
        options,
        &mut tick,
    ));
    bar.finish_and_clear();
    let report = match result {
        Ok(report) => report,
        Err(e @ EvalError::Unreachable { .. }) => {
            super::output::no_model(config, &e);
            return Ok(exit::LLM_UNREACHABLE);
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", sanitize(&eval::render(&report)));
    }
    Ok(exit::SUCCESS)
}
