//! What several commands set up the same way: the async runtime, the
//! question check, the retriever and the answerer.

use anyhow::Context;
use ragmap::answer::Answerer;
use ragmap::config::Config;
use ragmap::query::Query;
use ragmap::retrieve::{Hit, Retriever};
use ragmap::server::client::Client;

/// The async runtime every networked command runs on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The question given as words on the command line (`ragmap ask what is
/// LoRA`), or read from standard input for `-`.
pub fn question_words(words: &[String]) -> anyhow::Result<String> {
    if let [dash] = words {
        if dash == "-" {
            use std::io::Read;
            // A question, not a document: a bound keeps a wrong pipe from filling memory.
            const LIMIT: u64 = 1 << 20;
            let mut text = String::new();
            std::io::stdin()
                .take(LIMIT)
                .read_to_string(&mut text)
                .context("cannot read the question from standard input (UTF-8 text expected)")?;
            return Ok(text);
        }
    }
    Ok(words.join(" "))
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

/// Where `search`, `ask` and `chat` get passages: retrieval sent to the workspace's running
/// `ragmap serve` when there is one (no model to load here), else, or as
/// soon as the server fails to answer, done in this process. The results are
/// the same either way.
pub struct PassageSource<'c> {
    config: &'c Config,
    server: Option<Client>,
    local: Option<Retriever>,
}

impl<'c> PassageSource<'c> {
    /// With `use_server`, a live server of the workspace is used first; the
    /// local index and model load only when there is none.
    pub fn open(config: &'c Config, use_server: bool) -> anyhow::Result<PassageSource<'c>> {
        let server = use_server.then(|| Client::for_workspace(config)).flatten();
        let local = match server {
            Some(_) => None,
            None => Some(retriever(config)?),
        };
        Ok(PassageSource {
            config,
            server,
            local,
        })
    }

    /// See `Retriever::search`.
    pub async fn search(&mut self, query: &Query) -> anyhow::Result<Vec<Hit>> {
        self.run(query, false).await
    }

    /// See `Retriever::passages`.
    pub async fn passages(&mut self, query: &Query) -> anyhow::Result<Vec<Hit>> {
        self.run(query, true).await
    }

    async fn run(&mut self, query: &Query, passages: bool) -> anyhow::Result<Vec<Hit>> {
        if let Some(client) = &self.server {
            match client.search(query, &self.config.retrieve, passages).await {
                Ok(hits) => return Ok(hits),
                // A stale file or a failing server: work here from now on.
                Err(_) => self.server = None,
            }
        }
        let local = match &mut self.local {
            Some(local) => local,
            None => self.local.insert(retriever(self.config)?),
        };
        Ok(if passages {
            local.passages(query)?
        } else {
            local.search(query)?
        })
    }
}

/// The chat model `[llm]` configures; `translate` turns on cross-language
/// translation of questions.
pub fn answerer(config: &Config, translate: bool) -> anyhow::Result<Answerer> {
    Ok(Answerer::from_config(config, translate)?)
}
