//! `ragmap ask` and `ragmap chat`: the terminal side of answering (streaming,
//! sources, fallbacks, exit codes). The pipeline itself is `ragmap::answer`.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use ragmap::answer::{cited_sources, Answerer, Clock, Prepared, Timings};
use ragmap::config::{Config, RetrieveMode};
use ragmap::embed::Embedder;
use ragmap::index::Index;
use ragmap::llm::{self, ChatMessage, LlmError};
use ragmap::prompt::{estimate_tokens, Source};
use ragmap::retrieve::Retriever;
use ragmap::term::{sanitize, StreamSanitizer};

use crate::exit;

pub(crate) fn load<'c>(
    config: &'c Config,
    k: Option<usize>,
    mode: Option<RetrieveMode>,
    rewrite: bool,
) -> anyhow::Result<Answerer<'c>> {
    let mode = mode.unwrap_or(config.retrieve.mode);
    let k = k.unwrap_or(config.retrieve.top_k).max(1);
    let retriever = open_retriever(config, mode)?;
    let backend = llm::backend_from_config(config)?;
    Ok(Answerer::new(
        config,
        retriever,
        backend,
        mode,
        k,
        rewrite && config.llm.rewrite,
    ))
}

/// The index, and the embedding model unless `mode` is lexical.
pub(crate) fn open_retriever(config: &Config, mode: RetrieveMode) -> anyhow::Result<Retriever> {
    let index = Index::open(config)?;
    let embedder = match mode {
        RetrieveMode::Lexical => None,
        _ => Some(Embedder::load(config)?),
    };
    Ok(Retriever::new(index, embedder))
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// How one streamed answer ended.
enum Streamed {
    Done(llm::ChatOutcome),
    Failed(LlmError),
    Interrupted,
}

/// Streams the answer to stdout (sanitized, as it arrives) unless `quiet`.
async fn stream_answer(
    answerer: &Answerer<'_>,
    messages: &[ChatMessage],
    quiet: bool,
) -> (Streamed, String) {
    let options = answerer.answer_options();
    let mut sanitizer = StreamSanitizer::new();
    let mut shown = String::new();
    let mut sink = |t: &str| {
        let clean = sanitizer.push(t);
        shown.push_str(&clean);
        if !quiet {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(clean.as_bytes());
            let _ = out.flush();
        }
    };
    let result = tokio::select! {
        r = answerer.backend.chat(messages, &options, &mut sink) => match r {
            Ok(o) => Streamed::Done(o),
            Err(e) => Streamed::Failed(e),
        },
        _ = tokio::signal::ctrl_c() => Streamed::Interrupted,
    };
    (result, shown)
}

fn print_sources(answer: &str, sources: &[Source]) {
    let (cited, invalid) = cited_sources(answer, sources);
    let mut out = std::io::stdout().lock();
    let (heading, listed): (&str, Vec<&Source>) = if cited.is_empty() {
        ("Sources consulted (none cited):", sources.iter().collect())
    } else {
        ("Sources:", cited)
    };
    let _ = writeln!(out, "\n{heading}");
    for s in listed {
        write_source(&mut out, s);
    }
    if !invalid.is_empty() {
        let list: Vec<String> = invalid.iter().map(|n| format!("[{n}]")).collect();
        let _ = writeln!(
            out,
            "(the answer cites {} which match no source)",
            list.join(", ")
        );
    }
}

/// `[n] title — location`, then the section it came from: two passages of
/// one page are told apart by their headings.
fn write_source(out: &mut impl Write, s: &Source) {
    let _ = writeln!(
        out,
        "[{}] {} — {}",
        s.number,
        sanitize(&s.title),
        sanitize(&s.location)
    );
    if !s.heading.is_empty() && s.heading != s.title {
        let _ = writeln!(out, "    {}", sanitize(&s.heading));
    }
}

/// The retrieved passages, printed when no model can answer.
fn print_extractive(prepared: &Prepared) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "Passages that may answer \"{}\":\n",
        sanitize(&prepared.question)
    );
    for (i, hit) in prepared.hits.iter().enumerate() {
        let c = &hit.chunk;
        let _ = writeln!(
            out,
            "[{}] {} — {}",
            i + 1,
            sanitize(&c.title),
            sanitize(&c.source)
        );
        if !c.heading.is_empty() {
            let _ = writeln!(out, "    {}", sanitize(&c.heading));
        }
        let _ = writeln!(
            out,
            "    {}\n",
            sanitize(&ragmap::term::snippet(&c.text, 600))
        );
    }
}

pub(crate) fn unreachable_hint(config: &Config) -> String {
    format!(
        "start the model server, or point ragmap at one with --base-url / RAGMAP_LLM_URL / [llm] base_url (now {})",
        config.llm_base_url()
    )
}

pub fn run(
    config: &Config,
    question: &str,
    k: Option<usize>,
    mode: Option<RetrieveMode>,
    dry_run: bool,
    rewrite: bool,
    json: bool,
) -> anyhow::Result<u8> {
    let question = question.trim();
    if question.is_empty() {
        anyhow::bail!("the question is empty; ask something, e.g. ragmap ask \"什么是RAG？\"");
    }
    let clock = Clock::start();
    let mut timings = Timings::default();
    let mut answerer = load(config, k, mode, rewrite && !dry_run)?;
    timings.setup_ms = clock.ms();
    let rt = runtime()?;

    // Translation for cross-language retrieval; an unreachable endpoint is
    // remembered so the answer step does not wait for it a second time.
    let mut unreachable: Option<LlmError> = None;
    let mut translated = None;
    if answerer.rewrite {
        timings.first_request_ms = Some(clock.ms());
        match rt.block_on(answerer.translate(question)) {
            Ok(t) => translated = t,
            Err(e) if e.is_unreachable() => unreachable = Some(e),
            Err(_) => {}
        }
    }
    let prepared = answerer
        .prepare(question, question, translated)
        .context("retrieval failed")?;
    timings.retrieve_ms = clock.ms();

    if dry_run {
        let messages = answerer.messages(&prepared, &[]);
        if json {
            let value = serde_json::json!({
                "question": question,
                "messages": messages,
                "sources": prepared.prompt.sources,
                "estimated_prompt_tokens": prepared.prompt.estimated_tokens,
            });
            println!("{}", serde_json::to_string_pretty(&value)?);
        } else {
            for m in &messages {
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
        return Ok(0);
    }

    if let Some(e) = unreachable {
        return Ok(fallback(config, &prepared, &e, json));
    }
    let messages = answerer.messages(&prepared, &[]);
    timings.answer_request_ms = Some(clock.ms());
    timings.first_request_ms.get_or_insert(clock.ms());
    let (streamed, shown) = rt.block_on(stream_answer(&answerer, &messages, json));
    let answer_started = timings.answer_request_ms.unwrap_or(0);
    match streamed {
        Streamed::Done(outcome) => {
            timings.first_token_ms = outcome
                .time_to_first_token
                .map(|d| answer_started + d.as_millis() as u64);
            timings.total_ms = clock.ms();
            if json {
                print_json(&prepared, &shown, &timings, None)?;
            } else {
                if !shown.ends_with('\n') {
                    println!();
                }
                if outcome.truncated() {
                    println!("(the answer reached max_answer_tokens and was cut)");
                }
                print_sources(&shown, &prepared.prompt.sources);
            }
            Ok(0)
        }
        Streamed::Failed(e) if e.is_unreachable() => Ok(fallback(config, &prepared, &e, json)),
        Streamed::Failed(e) => {
            timings.total_ms = clock.ms();
            if json {
                print_json(&prepared, &shown, &timings, Some(&e.to_string()))?;
            } else if !shown.is_empty() {
                println!();
                print_sources(&shown, &prepared.prompt.sources);
            }
            eprintln!("error: {}", sanitize(&e.to_string()));
            Ok(exit::LLM_FAILED)
        }
        Streamed::Interrupted => {
            println!();
            eprintln!("interrupted");
            Ok(exit::INTERRUPTED)
        }
    }
}

fn fallback(config: &Config, prepared: &Prepared, e: &LlmError, json: bool) -> u8 {
    eprintln!(
        "error: {}; {}",
        sanitize(&e.to_string()),
        unreachable_hint(config)
    );
    if json {
        let _ = print_json(prepared, "", &Timings::default(), Some(&e.to_string()));
    } else {
        print_extractive(prepared);
    }
    exit::LLM_UNREACHABLE
}

fn print_json(
    prepared: &Prepared,
    answer: &str,
    timings: &Timings,
    error: Option<&str>,
) -> anyhow::Result<()> {
    let (cited, invalid) = cited_sources(answer, &prepared.prompt.sources);
    let value = serde_json::json!({
        "question": prepared.question,
        "translated_question": prepared.translated,
        "answer": answer,
        "sources": prepared.prompt.sources,
        "cited": cited.iter().map(|s| s.number).collect::<Vec<_>>(),
        "invalid_citations": invalid,
        "timings_ms": timings,
        "error": error,
    });
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

pub fn chat(
    config: &Config,
    k: Option<usize>,
    mode: Option<RetrieveMode>,
    rewrite: bool,
) -> anyhow::Result<u8> {
    let mut answerer = load(config, k, mode, rewrite)?;
    let rt = runtime()?;
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("ragmap chat — ask about the roadmap's resources. /sources, /reset, /exit");
    }
    // (question, answer) pairs; the model sees them as prior turns, bounded by tokens.
    let mut history: Vec<(String, String)> = Vec::new();
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
                let mut out = std::io::stdout().lock();
                for s in &last_sources {
                    write_source(&mut out, s);
                }
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
        let (standalone, rewritten) = rt.block_on(answerer.standalone_question(&history, input));
        if !history.is_empty() && rewritten && standalone != input {
            eprintln!("(searching for: {})", sanitize(&standalone));
        }
        let translated = if answerer.rewrite {
            rt.block_on(answerer.translate(&standalone)).ok().flatten()
        } else {
            None
        };
        // The user's own words go to the model; retrieval uses the standalone form.
        let prepared = answerer
            .prepare(input, &standalone, translated)
            .context("retrieval failed")?;
        let turns = bounded_history(&history, config.llm.history_tokens);
        let messages = answerer.messages(&prepared, &turns);
        let (streamed, shown) = rt.block_on(stream_answer(&answerer, &messages, false));
        println!();
        match streamed {
            Streamed::Done(_) => {
                print_sources(&shown, &prepared.prompt.sources);
                history.push((input.to_string(), shown));
                last_sources = prepared.prompt.sources;
            }
            Streamed::Failed(e) if e.is_unreachable() => {
                eprintln!(
                    "error: {}; {}",
                    sanitize(&e.to_string()),
                    unreachable_hint(config)
                );
                print_extractive(&prepared);
                last_sources = prepared.prompt.sources;
            }
            Streamed::Failed(e) => {
                eprintln!("error: {}", sanitize(&e.to_string()));
                last_sources = prepared.prompt.sources;
            }
            Streamed::Interrupted => {
                eprintln!("(interrupted; /exit to leave)");
            }
        }
    }
    Ok(0)
}

/// The most recent turns that fit in `budget` tokens, oldest first.
fn bounded_history(history: &[(String, String)], budget: usize) -> Vec<ChatMessage> {
    let mut used = 0;
    let mut turns = Vec::new();
    for (q, a) in history.iter().rev() {
        let cost = estimate_tokens(q) + estimate_tokens(a) + 8;
        if used + cost > budget {
            break;
        }
        used += cost;
        turns.push(ChatMessage::assistant(a.clone()));
        turns.push(ChatMessage::user(q.clone()));
    }
    turns.reverse();
    turns
}
