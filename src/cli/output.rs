//! Printing what commands found: passages, sources, answers as JSON. Text
//! from pages and models goes through `sanitize` on its way to the terminal.

use std::io::Write;

use ragmap::answer::{cited_sources, source_lines, Answerer, Prepared, Timings, Turn};
use ragmap::llm::{self, ChatOutcome, LlmError};
use ragmap::prompt::Source;
use ragmap::retrieve::Hit;
use ragmap::term::{sanitize, snippet, StreamSanitizer};

/// `search`'s listing: rank, score, title, location, section, snippet.
pub fn print_hits(hits: &[Hit]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if hits.is_empty() {
        writeln!(out, "no matching passages")?;
    }
    for (i, hit) in hits.iter().enumerate() {
        let c = &hit.chunk;
        writeln!(out, "[{}] {:.4}  {}", i + 1, hit.score, sanitize(&c.title))?;
        writeln!(out, "    {}", sanitize(&c.source))?;
        if !c.heading.is_empty() {
            writeln!(out, "    {}", sanitize(&c.heading))?;
        }
        writeln!(out, "    {}", sanitize(&snippet(&c.text, 240)))?;
        writeln!(out)?;
    }
    Ok(())
}

/// The sources an answer cited (or, citing none, every source it was given),
/// then any citation that matches no source. Nothing with `-q`.
pub fn print_sources(answer: &str, sources: &[Source]) {
    if quiet() {
        return;
    }
    let (cited, invalid) = cited_sources(answer, sources);
    let mut out = std::io::stdout().lock();
    let (heading, listed): (&str, Vec<&Source>) = if cited.is_empty() {
        ("Sources consulted (none cited):", sources.iter().collect())
    } else {
        ("Sources:", cited)
    };
    let _ = writeln!(out, "\n{heading}");
    write_sources(&mut out, listed);
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
/// one page are told apart by their headings, and two of one section share
/// a line (`[1, 2] …`).
pub fn write_sources<'s>(out: &mut impl Write, sources: impl IntoIterator<Item = &'s Source>) {
    for line in source_lines(sources, true) {
        let s = line.source;
        let _ = writeln!(
            out,
            "{} {} — {}",
            line.label(),
            sanitize(&s.title),
            sanitize(&s.location)
        );
        if !s.heading.is_empty() && s.heading != s.title {
            let _ = writeln!(out, "    {}", sanitize(&s.heading));
        }
    }
}

/// The retrieved passages, printed when no model can answer.
pub fn print_extractive(prepared: &Prepared) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "Passages that may answer \"{}\":\n",
        sanitize(prepared.query.question())
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
        let _ = writeln!(out, "    {}\n", sanitize(&snippet(&c.text, 600)));
    }
}

/// `ask --json`: the answer with its sources, citations, timings and error.
pub fn print_answer_json(
    prepared: &Prepared,
    answer: &str,
    timings: &Timings,
    error: Option<&str>,
) -> anyhow::Result<()> {
    let (cited, invalid) = cited_sources(answer, &prepared.prompt.sources);
    let value = serde_json::json!({
        "question": prepared.query.question(),
        "translated_question": prepared.query.translation(),
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

/// How one streamed answer ended.
pub enum Streamed {
    Done(ChatOutcome),
    Failed(LlmError),
    Interrupted,
}

/// Streams the answer to stdout (sanitized, as it arrives) unless `quiet`;
/// Ctrl-C stops it. Returns how it ended and the text shown.
pub async fn stream_answer(
    answerer: &Answerer,
    prepared: &Prepared,
    history: &[Turn],
    quiet: bool,
) -> (Streamed, String) {
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
    let streamed = tokio::select! {
        r = answerer.answer(prepared, history, &mut sink) => match r {
            Ok(o) => Streamed::Done(o),
            Err(e) => Streamed::Failed(llm::explain_unknown_model(answerer.backend(), e).await),
        },
        _ = tokio::signal::ctrl_c() => Streamed::Interrupted,
    };
    (streamed, shown)
}

/// How much a command says besides its result (`-q`, `-v`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet = 0,
    Normal = 1,
    Verbose = 2,
}

static VERBOSITY: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);

/// Set once, from the global flags, before the command runs.
pub fn set_verbosity(v: Verbosity) {
    VERBOSITY.store(v as u8, std::sync::atomic::Ordering::Relaxed);
}

pub fn verbosity() -> Verbosity {
    match VERBOSITY.load(std::sync::atomic::Ordering::Relaxed) {
        0 => Verbosity::Quiet,
        1 => Verbosity::Normal,
        _ => Verbosity::Verbose,
    }
}

/// `-q`: the result only.
pub fn quiet() -> bool {
    verbosity() == Verbosity::Quiet
}

/// With `-v`: one `ragmap: …` line on stderr.
pub fn verbose(message: std::fmt::Arguments<'_>) {
    if verbosity() == Verbosity::Verbose {
        eprintln!("ragmap: {}", sanitize(&message.to_string()));
    }
}
