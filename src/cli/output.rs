//! Printing what commands found: passages, sources, answers as JSON. Text
//! from pages and models goes through `sanitize` on its way to the terminal.

use std::io::Write;

use ragmap::answer::{Answerer, Prepared, Turn};
use ragmap::cite::{source_lines, Citations};
use ragmap::config::Config;
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
/// then the citations of no source taken out of it (`removed`). Nothing
/// with `-q`.
pub fn print_sources(answer: &str, sources: &[Source], removed: &[usize]) {
    if quiet() {
        return;
    }
    let citations = Citations::of(answer, sources).with_removed(removed);
    let mut out = std::io::stdout().lock();
    let heading = match citations.cited.is_empty() {
        true => "Sources consulted (none cited):",
        false => "Sources:",
    };
    let _ = writeln!(out, "\n{heading}");
    write_sources(&mut out, citations.listed(sources));
    if !citations.invalid.is_empty() {
        let unsourced: Vec<String> = citations.invalid.iter().map(|n| format!("[{n}]")).collect();
        let _ = writeln!(
            out,
            "(the model also cited {}, which match no source: taken out of the answer)",
            unsourced.join(", ")
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

/// No chat model answered: one line saying so, and how to start or name one.
pub fn no_model(config: &Config, e: &dyn std::fmt::Display) {
    eprintln!(
        "error: {}; {}",
        sanitize(&e.to_string()),
        unreachable_hint(config)
    );
}

/// What to do when no model answers.
pub fn unreachable_hint(config: &Config) -> String {
    format!(
        "start the model server (bash scripts/llm-server start 8080, or Ollama), or point ragmap at one with --base-url / RAGMAP_LLM_URL / [llm] base_url (now {})",
        config.llm_base_url()
    )
}

/// How one streamed answer ended.
pub enum Streamed {
    Done(ChatOutcome),
    Failed(LlmError),
    Interrupted,
}

/// Streams the answer (sanitized) to stdout as it arrives when
/// `print_tokens`, else collects it silently (`--json`); Ctrl-C stops it.
/// Returns how it ended and the text shown; `prepared` ends as the prompt
/// the model answered (refitted, when the server refused it as too long).
pub async fn stream_answer(
    answerer: &Answerer,
    prepared: &mut Prepared,
    history: &[Turn],
    print_tokens: bool,
) -> (Streamed, String) {
    let mut sanitizer = StreamSanitizer::new();
    let mut shown = String::new();
    let mut sink = |t: &str| {
        let clean = sanitizer.push(t);
        shown.push_str(&clean);
        if print_tokens {
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
