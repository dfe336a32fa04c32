//! Retrieval evaluation: a question set with gold documents, run through
//! retrieval in one or more configurations, scored per document.
//!
//! Questions are JSON lines:
//! `{"id", "question", "gold": [url or corpus path, ...], "answer_keywords"?, "lang"?, "cross_language"?}`.
//! A retrieved document matches a gold entry when its source URL or corpus
//! path equals it, or when the gold entry (scheme dropped) is a path-aligned
//! suffix of the source with scheme and host dropped, so
//! `github.com/x/y/index.html` matches `http://127.0.0.1:8719/github.com/x/y/index.html`.
//!
//! Relevance is binary and per document: a gold document counts once, at its
//! first rank. Each configuration ranks [`K`] slots with at most one chunk per
//! document unless the variant says otherwise, so the ranking is a ranking of
//! documents.
//!
//! With answers on, each question is also answered as `ragmap ask` would
//! (the variant's mode and weights, the configured per-document cap, top_k
//! and neighbours) and the answer is scored: share of `answer_keywords` it
//! contains, whether it cites, whether every `[n]` is a source of its prompt,
//! and whether it cites a gold document.
//!
//! The stages: [`questions`] reads the file, [`variants`] parses `--compare`,
//! [`run`] retrieves (and answers) every question under every variant,
//! [`metrics`] and [`answers`] score rankings and answers, [`render`] prints.

use std::path::PathBuf;

use crate::llm::LlmError;
use crate::retrieve::RetrieveError;

pub mod answers;
pub mod metrics;
pub mod questions;
pub mod render;
pub mod run;
pub mod variants;

pub use answers::{mean_answers, score_answer, AnswerMetrics, AnswerResult, AnswerScores};
pub use metrics::{matches, mean, score, Metrics, RankedDoc, Scores};
pub use questions::{load_questions, Question};
pub use render::render;
pub use run::{run, QuestionResult, Report, RunOptions, VariantReport};
pub use variants::{mode_name, parse_variants, Variant};

/// Slots ranked per question (documents, with one chunk per document).
pub const K: usize = 10;
/// A question is listed as a miss when no gold document is in this many slots.
pub const MISS_RANK: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{0} holds no questions")]
    NoQuestions(PathBuf),
    #[error("bad variant {spec:?}: {message}; expected MODE[:key=value...], e.g. hybrid:lexical_weight=0.5")]
    Variant { spec: String, message: String },
    #[error("question {id}: {source}")]
    Retrieve {
        id: String,
        #[source]
        source: RetrieveError,
    },
    #[error("--answers and --rewrite need a model endpoint")]
    NeedsModel,
    /// The model endpoint cannot be reached: no later question would fare better.
    #[error("question {id}: {source}")]
    Unreachable {
        id: String,
        #[source]
        source: LlmError,
    },
}

#[cfg(test)]
pub(crate) mod testing {
    pub fn gold(g: &[&str]) -> Vec<String> {
        g.iter().map(|s| s.to_string()).collect()
    }

    pub fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    pub const A: &str = "http://127.0.0.1:8719/a.com/x/index.html";
    pub const B: &str = "http://127.0.0.1:8719/b.com/y.html";
    pub const C: &str = "https://c.org/z";
}
