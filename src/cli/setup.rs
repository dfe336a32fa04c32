//! What several commands set up the same way: the async runtime, the
//! question check, the retriever and the answerer.

use anyhow::Context;
use ragmap::answer::Answerer;
use ragmap::config::Config;
use ragmap::retrieve::Retriever;

/// The async runtime every networked command runs on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The question without surrounding space; an empty one is an error showing
/// how `command` is used.
pub fn question<'q>(question: &'q str, command: &str) -> anyhow::Result<&'q str> {
    let question = question.trim();
    if question.is_empty() {
        anyhow::bail!(
            "the question is empty; ask something, e.g. ragmap {command} \"什么是RAG？\""
        );
    }
    Ok(question)
}

/// The index and, unless the configured mode is lexical, the embedding model.
pub fn retriever(config: &Config) -> anyhow::Result<Retriever> {
    Ok(Retriever::open(config)?)
}

/// The chat model `[llm]` configures; `translate` turns on cross-language
/// translation of questions.
pub fn answerer(config: &Config, translate: bool) -> anyhow::Result<Answerer> {
    Ok(Answerer::from_config(config, translate)?)
}

/// What to do when no model answers.
pub fn unreachable_hint(config: &Config) -> String {
    format!(
        "start the model server, or point ragmap at one with --base-url / RAGMAP_LLM_URL / [llm] base_url (now {})",
        config.llm_base_url()
    )
}
