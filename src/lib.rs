//! ragmap: a local RAG assistant over the resources of an AI-engineering roadmap.
//!
//! The modules follow the data flow:
//! roadmap → crawl → corpus → chunk → embed → index → retrieve → prompt → llm.

pub mod config;
pub mod corpus;
pub mod crawl;
pub mod roadmap;
