//! ragmap: a local RAG assistant over the resources of an AI-engineering roadmap.
//!
//! The modules follow the data flow:
//! roadmap → crawl → corpus → chunk → embed → index → query → retrieve →
//! prompt → llm → cite, with [`answer`] walking a question from the query to
//! the model.
//! Beside the flow: [`config`], [`eval`], [`exit`] codes, [`glossary`]
//! (Chinese ↔ English terms for lexical search), [`lang`] (script and
//! language of a text), [`lock`]s, [`term`] (terminal-safe output),
//! [`tokenizer`] (the embedding model's tokenizer, loaded fast), [`watch`]
//! (re-indexing what changes in the corpus, for `--watch`).

pub mod answer;
pub mod chunk;
pub mod cite;
pub mod config;
pub mod corpus;
pub mod crawl;
pub mod embed;
pub mod eval;
pub mod exit;
pub mod glossary;
pub mod index;
pub mod lang;
pub mod llm;
pub mod lock;
pub mod prompt;
pub mod query;
pub mod retrieve;
pub mod roadmap;
pub mod server;
pub mod term;
pub mod tokenizer;
pub mod watch;
