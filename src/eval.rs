//! Retrieval evaluation: a question set with gold documents, run through
//! `retrieve` in one or more configurations, scored per document.
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

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::answer::{cited_sources, Answerer};
use crate::config::{Retrieve, RetrieveMode};
use crate::llm::LlmError;
use crate::prompt::{detect_language, Language, Source};
use crate::retrieve::{Hit, RetrieveError, Retriever};

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

/// One line of the question file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    pub id: String,
    pub question: String,
    pub gold: Vec<String>,
    #[serde(default)]
    pub answer_keywords: Vec<String>,
    #[serde(default)]
    pub lang: Option<String>,
    #[serde(default)]
    pub cross_language: bool,
}

impl Question {
    /// `zh` or `en`: as given, else detected from the question text.
    pub fn language(&self) -> &str {
        match self.lang.as_deref() {
            Some(l) => l,
            None => language_code(detect_language(&self.question)),
        }
    }
}

fn language_code(language: Language) -> &'static str {
    match language {
        Language::Chinese => "zh",
        Language::English => "en",
    }
}

/// Reads a question file; any bad line is an error naming `file:line`.
pub fn load_questions(path: &Path) -> Result<Vec<Question>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut questions: Vec<Question> = Vec::new();
    let mut ids: HashSet<String> = HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let bad = |message: String| EvalError::Line {
            path: path.to_path_buf(),
            line,
            message,
        };
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let q: Question = serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?;
        if q.id.trim().is_empty() {
            return Err(bad("empty \"id\"".into()));
        }
        if !ids.insert(q.id.clone()) {
            return Err(bad(format!("duplicate id {:?}", q.id)));
        }
        if q.question.trim().is_empty() {
            return Err(bad("empty \"question\"".into()));
        }
        if q.gold.is_empty() {
            return Err(bad(
                "empty \"gold\": list at least one URL or corpus path".into()
            ));
        }
        if let Some(g) = q.gold.iter().find(|g| normalize(g).is_empty()) {
            return Err(bad(format!("gold entry {g:?} names no document")));
        }
        if let Some(l) = q.lang.as_deref() {
            if l != "zh" && l != "en" {
                return Err(bad(format!("\"lang\" must be \"zh\" or \"en\", not {l:?}")));
            }
        }
        questions.push(q);
    }
    if questions.is_empty() {
        return Err(EvalError::NoQuestions(path.to_path_buf()));
    }
    Ok(questions)
}

/// A retrieval configuration to evaluate.
#[derive(Debug, Clone)]
pub struct Variant {
    /// As written on the command line, e.g. `hybrid:rrf_k=30`.
    pub name: String,
    pub mode: RetrieveMode,
    /// For the document ranking: one chunk per document unless overridden.
    pub settings: Retrieve,
    /// For answers: as `ask` retrieves, with this variant's overrides.
    pub answer_settings: Retrieve,
}

/// Parses `hybrid,vector,lexical,hybrid:lexical_weight=0.5:rrf_k=30`: modes
/// separated by commas, each optionally followed by `:key=value` overrides of
/// the `[retrieve]` settings. Evaluation defaults to one chunk per document.
pub fn parse_variants(spec: &str, base: &Retrieve) -> Result<Vec<Variant>, EvalError> {
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = |message: String| EvalError::Variant {
            spec: item.to_string(),
            message,
        };
        let mut parts = item.split(':');
        let mode = match parts.next().unwrap_or_default().trim() {
            "hybrid" => RetrieveMode::Hybrid,
            "vector" => RetrieveMode::Vector,
            "lexical" => RetrieveMode::Lexical,
            other => return Err(bad(format!("unknown mode {other:?}"))),
        };
        let mut settings = base.clone();
        let mut cap_given = false;
        for kv in parts {
            let (key, value) = kv
                .split_once('=')
                .ok_or_else(|| bad(format!("{kv:?} is not key=value")))?;
            let (key, value) = (key.trim(), value.trim());
            let float = || {
                value
                    .parse::<f32>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| bad(format!("{key} needs a non-negative number, not {value:?}")))
            };
            let int = || {
                value
                    .parse::<usize>()
                    .map_err(|_| bad(format!("{key} needs a whole number, not {value:?}")))
            };
            match key {
                "candidates" => settings.candidates = int()?,
                "vector_weight" => settings.vector_weight = float()?,
                "lexical_weight" => settings.lexical_weight = float()?,
                "rrf_k" => settings.rrf_k = float()?,
                "max_chunks_per_doc" => {
                    settings.max_chunks_per_doc = int()?.max(1);
                    cap_given = true;
                }
                "dedup_threshold" => settings.dedup_threshold = float()?,
                _ => return Err(bad(format!(
                    "unknown setting {key:?} (candidates, vector_weight, lexical_weight, rrf_k, max_chunks_per_doc, dedup_threshold)"
                ))),
            }
        }
        let answer_settings = settings.clone();
        if !cap_given {
            settings.max_chunks_per_doc = 1;
        }
        out.push(Variant {
            name: item.to_string(),
            mode,
            settings,
            answer_settings,
        });
    }
    if out.is_empty() {
        return Err(EvalError::Variant {
            spec: spec.to_string(),
            message: "no mode given".into(),
        });
    }
    Ok(out)
}

/// The mode as written in config.toml and on the command line.
pub fn mode_name(mode: RetrieveMode) -> &'static str {
    match mode {
        RetrieveMode::Hybrid => "hybrid",
        RetrieveMode::Vector => "vector",
        RetrieveMode::Lexical => "lexical",
    }
}

/// Mean metrics over a set of questions.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Metrics {
    pub questions: usize,
    pub recall_at_1: f64,
    pub recall_at_5: f64,
    pub recall_at_10: f64,
    pub mrr_at_10: f64,
    pub ndcg_at_10: f64,
}

/// One ranking against one question's gold documents: the metrics of a set
/// of one question, and where each gold entry was found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scores {
    /// Rank (from 1) at which each gold entry was first found, in gold order.
    pub gold_ranks: Vec<Option<usize>>,
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// A ranked document as the metrics see it: its source and corpus path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    pub source: String,
    pub path: String,
    pub title: String,
}

impl From<&Hit> for Ranked {
    fn from(h: &Hit) -> Self {
        Ranked {
            source: h.chunk.source.clone(),
            path: h.chunk.path.clone(),
            title: h.chunk.title.clone(),
        }
    }
}

/// Scores one ranking. `None` when `gold` is empty (the question cannot be scored).
/// A document appearing again later in the ranking adds nothing; slots keep
/// their positions. Only the first [`K`] slots count.
pub fn score(ranking: &[Ranked], gold: &[String]) -> Option<Scores> {
    // Gold entries naming the same document count once.
    let mut golds: Vec<&String> = Vec::new();
    for g in gold {
        if !golds.iter().any(|h| normalize(h) == normalize(g)) {
            golds.push(g);
        }
    }
    if golds.is_empty() {
        return None;
    }
    let mut first_rank: Vec<Option<usize>> = vec![None; golds.len()];
    let mut seen_docs: HashSet<(&str, &str)> = HashSet::new();
    let mut dcg = 0.0;
    let mut mrr = 0.0;
    for (i, doc) in ranking.iter().take(K).enumerate() {
        let rank = i + 1;
        if !seen_docs.insert((doc.source.as_str(), doc.path.as_str())) {
            continue;
        }
        let mut relevant = false;
        for (j, g) in golds.iter().enumerate() {
            if first_rank[j].is_none() && matches(doc, g) {
                first_rank[j] = Some(rank);
                relevant = true;
            }
        }
        if relevant {
            dcg += 1.0 / ((rank + 1) as f64).log2();
            if mrr == 0.0 {
                mrr = 1.0 / rank as f64;
            }
        }
    }
    let ideal: f64 = (1..=golds.len().min(K))
        .map(|rank| 1.0 / ((rank + 1) as f64).log2())
        .sum();
    let recall = |k: usize| {
        first_rank
            .iter()
            .filter(|r| r.is_some_and(|r| r <= k))
            .count() as f64
            / golds.len() as f64
    };
    // Report ranks in the caller's gold order, duplicates sharing their rank.
    let gold_ranks = gold
        .iter()
        .map(|g| {
            golds
                .iter()
                .position(|h| normalize(h) == normalize(g))
                .and_then(|j| first_rank[j])
        })
        .collect();
    Some(Scores {
        gold_ranks,
        metrics: Metrics {
            questions: 1,
            recall_at_1: recall(1),
            recall_at_5: recall(5),
            recall_at_10: recall(10),
            mrr_at_10: mrr,
            ndcg_at_10: dcg / ideal,
        },
    })
}

/// Mean of per-question metrics.
pub fn mean(scores: &[&Metrics]) -> Metrics {
    let n = scores.len();
    if n == 0 {
        return Metrics::default();
    }
    let avg = |f: fn(&Metrics) -> f64| scores.iter().map(|s| f(s)).sum::<f64>() / n as f64;
    Metrics {
        questions: n,
        recall_at_1: avg(|s| s.recall_at_1),
        recall_at_5: avg(|s| s.recall_at_5),
        recall_at_10: avg(|s| s.recall_at_10),
        mrr_at_10: avg(|s| s.mrr_at_10),
        ndcg_at_10: avg(|s| s.ndcg_at_10),
    }
}

/// Whether a retrieved document is the one a gold entry names.
pub fn matches(doc: &Ranked, gold: &str) -> bool {
    let gold = gold.trim();
    if gold == doc.source || gold == doc.path || gold == format!("corpus/{}", doc.path) {
        return true;
    }
    let g = normalize(gold);
    if g.is_empty() {
        return false;
    }
    let suffix = format!("/{g}");
    normalize(&doc.source) == g
        || without_host(&doc.source).ends_with(&suffix)
        || format!("/{}", normalize(&doc.path)).ends_with(&suffix)
}

/// Percent-decoded, scheme, fragment and query dropped, `/index.html` and
/// trailing slashes dropped: `https://h/a/index.html#x` → `h/a`.
fn normalize(s: &str) -> String {
    let s = s.trim();
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    let s = s.split(['#', '?']).next().unwrap_or_default();
    let mut s = percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned();
    if s == "index.html" {
        s.clear();
    } else if s.ends_with("/index.html") {
        s.truncate(s.len() - "/index.html".len());
    }
    s.trim_end_matches('/').to_string()
}

/// The normalized source with its host dropped (`/a/b`); a source without a
/// scheme is taken as a path.
fn without_host(source: &str) -> String {
    let n = normalize(source);
    if source.contains("://") {
        match n.find('/') {
            Some(i) => n[i..].to_string(),
            None => String::new(),
        }
    } else {
        format!("/{}", n.trim_start_matches('/'))
    }
}

/// One answer, as the model gave it and as scored.
#[derive(Debug, Clone, Serialize)]
pub struct AnswerResult {
    pub text: String,
    /// The model's error, when the answer failed (the text is what arrived before it).
    pub error: Option<String>,
    pub ms: u64,
    #[serde(flatten)]
    pub scores: AnswerScores,
}

/// What one answer is scored on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnswerScores {
    /// Share of the question's keywords found in the answer; `None` when it lists none.
    pub keyword_coverage: Option<f64>,
    pub keywords_missing: Vec<String>,
    /// Every `[n]` of the answer, in order.
    pub citations: Vec<usize>,
    /// Cited numbers that are not a source of the prompt.
    pub invalid_citations: Vec<usize>,
    /// A cited source is a gold document.
    pub cites_gold: bool,
    /// A gold document is among the prompt's sources: the most `cites_gold` can be.
    pub gold_in_context: bool,
    /// The answer is written in the question's language (zh or en).
    pub in_question_language: bool,
}

/// Scores an answer against the sources its prompt numbered and the
/// question's gold documents, keywords and language.
pub fn score_answer(answer: &str, sources: &[Source], question: &Question) -> AnswerScores {
    let (gold, keywords) = (&question.gold, &question.answer_keywords);
    let is_gold = |s: &Source| {
        let doc = Ranked {
            source: s.location.clone(),
            path: s.path.clone(),
            title: s.title.clone(),
        };
        gold.iter().any(|g| matches(&doc, g))
    };
    let (cited, invalid_citations) = cited_sources(answer, sources);
    let folded = fold_for_match(answer);
    let keywords_missing: Vec<String> = keywords
        .iter()
        .filter(|k| !folded.contains(&fold_for_match(k)))
        .cloned()
        .collect();
    let keyword_coverage = (!keywords.is_empty())
        .then(|| (keywords.len() - keywords_missing.len()) as f64 / keywords.len() as f64);
    AnswerScores {
        keyword_coverage,
        keywords_missing,
        citations: crate::prompt::cited_numbers(answer),
        invalid_citations,
        cites_gold: cited.iter().any(|s| is_gold(s)),
        gold_in_context: sources.iter().any(is_gold),
        in_question_language: !answer.trim().is_empty()
            && language_code(detect_language(answer)) == question.language(),
    }
}

/// Lower case, full-width ASCII as ASCII, no white space: `6 GB`, `６GB` and
/// `6gb` match.
fn fold_for_match(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            _ => c,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// Mean answer scores over a set of questions.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AnswerMetrics {
    pub questions: usize,
    /// Answers the model failed to finish (scored on what arrived).
    pub failed: usize,
    /// Mean over the questions that list keywords.
    pub keyword_coverage: Option<f64>,
    /// Share of answers citing at least one `[n]`.
    pub citing: f64,
    /// Share of citing answers whose every `[n]` is a source of the prompt.
    pub citations_valid: Option<f64>,
    /// Share of answers citing a gold document.
    pub cites_gold: f64,
    /// Share of prompts holding a gold document.
    pub gold_in_context: f64,
    /// Share of answers written in the question's language.
    pub in_question_language: f64,
}

pub fn mean_answers(answers: &[&AnswerResult]) -> AnswerMetrics {
    let n = answers.len();
    if n == 0 {
        return AnswerMetrics::default();
    }
    let share = |count: usize, of: usize| (of > 0).then(|| count as f64 / of as f64);
    let coverages: Vec<f64> = answers
        .iter()
        .filter_map(|a| a.scores.keyword_coverage)
        .collect();
    let citing: Vec<&&AnswerResult> = answers
        .iter()
        .filter(|a| !a.scores.citations.is_empty())
        .collect();
    let valid = citing
        .iter()
        .filter(|a| a.scores.invalid_citations.is_empty())
        .count();
    AnswerMetrics {
        questions: n,
        failed: answers.iter().filter(|a| a.error.is_some()).count(),
        keyword_coverage: (!coverages.is_empty())
            .then(|| coverages.iter().sum::<f64>() / coverages.len() as f64),
        citing: citing.len() as f64 / n as f64,
        citations_valid: share(valid, citing.len()),
        cites_gold: answers.iter().filter(|a| a.scores.cites_gold).count() as f64 / n as f64,
        gold_in_context: answers.iter().filter(|a| a.scores.gold_in_context).count() as f64
            / n as f64,
        in_question_language: answers
            .iter()
            .filter(|a| a.scores.in_question_language)
            .count() as f64
            / n as f64,
    }
}

/// One question's outcome under one variant.
#[derive(Debug, Clone, Serialize)]
pub struct QuestionResult {
    pub id: String,
    pub question: String,
    pub lang: String,
    pub cross_language: bool,
    pub gold: Vec<String>,
    /// The question in the other language, retrieved with as well (rewriting on).
    pub translated: Option<String>,
    #[serde(flatten)]
    pub scores: Scores,
    /// The ranked documents (up to [`K`]).
    pub retrieved: Vec<Ranked>,
    /// With answers on.
    pub answer: Option<AnswerResult>,
}

impl QuestionResult {
    /// No gold document within the first [`MISS_RANK`] slots.
    pub fn is_miss(&self) -> bool {
        !self
            .scores
            .gold_ranks
            .iter()
            .any(|r| r.is_some_and(|r| r <= MISS_RANK))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct VariantReport {
    pub name: String,
    /// `hybrid`, `vector` or `lexical`.
    pub mode: String,
    pub candidates: usize,
    pub vector_weight: f32,
    pub lexical_weight: f32,
    pub rrf_k: f32,
    pub max_chunks_per_doc: usize,
    pub overall: Metrics,
    /// Keyed by `zh` / `en`.
    pub by_language: BTreeMap<String, Metrics>,
    pub cross_language: Metrics,
    /// With answers on: overall, then keyed by `zh` / `en` and `cross-language`.
    pub answers: Option<AnswerMetrics>,
    pub answers_by_subset: BTreeMap<String, AnswerMetrics>,
    pub questions: Vec<QuestionResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub k: usize,
    pub questions: usize,
    /// Questions were also retrieved with their LLM translation.
    pub rewrite: bool,
    /// Questions retrieved with a usable translation (non-empty, in the other language).
    pub translated: usize,
    /// Translation requests that failed (retrieval went on without them).
    pub rewrite_failures: usize,
    pub answers: bool,
    pub variants: Vec<VariantReport>,
}

/// What [`run`] does beyond ranking documents.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Translate each question with the model and retrieve with both, as `ask` does.
    pub rewrite: bool,
    /// Answer each question with the model and score the answers.
    pub answers: bool,
}

/// What the evaluation runs on: retrieval alone (no model endpoint needed),
/// or retrieval with a model to translate and answer.
pub enum Engine<'a, 'c> {
    Retrieval(&'a mut Retriever),
    WithModel(&'a mut Answerer<'c>),
}

impl<'c> Engine<'_, 'c> {
    fn retriever(&mut self) -> &mut Retriever {
        match self {
            Engine::Retrieval(r) => r,
            Engine::WithModel(a) => &mut a.retriever,
        }
    }

    fn answerer(&mut self) -> Result<&mut Answerer<'c>, EvalError> {
        match self {
            Engine::Retrieval(_) => Err(EvalError::NeedsModel),
            Engine::WithModel(a) => Ok(a),
        }
    }
}

/// Runs every question through every variant. `tick` is called once per
/// translation and once per question and variant, for progress.
pub async fn run(
    mut engine: Engine<'_, '_>,
    questions: &[Question],
    variants: &[Variant],
    options: RunOptions,
    tick: &mut dyn FnMut(),
) -> Result<Report, EvalError> {
    let mut translations: Vec<Option<String>> = vec![None; questions.len()];
    let mut rewrite_failures = 0;
    if options.rewrite {
        let answerer = engine.answerer()?;
        for (q, slot) in questions.iter().zip(translations.iter_mut()) {
            match answerer.translate(&q.question).await {
                Ok(t) => *slot = t,
                Err(source) if source.is_unreachable() => {
                    return Err(EvalError::Unreachable {
                        id: q.id.clone(),
                        source,
                    })
                }
                Err(_) => rewrite_failures += 1,
            }
            tick();
        }
    }
    let mut reports = Vec::new();
    for v in variants {
        let mut results = Vec::new();
        for (q, translated) in questions.iter().zip(&translations) {
            let mut queries = vec![q.question.clone()];
            queries.extend(translated.iter().cloned());
            let retrieve_error = |source| EvalError::Retrieve {
                id: q.id.clone(),
                source,
            };
            let hits = engine
                .retriever()
                .search(&queries, v.mode, &v.settings, K)
                .map_err(retrieve_error)?;
            let retrieved: Vec<Ranked> = hits.iter().map(Ranked::from).collect();
            // Gold lists are checked non-empty on load.
            let Some(scores) = score(&retrieved, &q.gold) else {
                continue;
            };
            let answer = if options.answers {
                let answerer = engine.answerer()?;
                answerer.mode = v.mode;
                answerer.settings = v.answer_settings.clone();
                let prepared = answerer
                    .prepare(&q.question, &q.question, translated.clone())
                    .map_err(retrieve_error)?;
                let started = std::time::Instant::now();
                let (text, error) = match answerer.answer(&prepared).await {
                    Ok(text) => (text, None),
                    Err(source) if source.is_unreachable() => {
                        return Err(EvalError::Unreachable {
                            id: q.id.clone(),
                            source,
                        })
                    }
                    Err(e) => (
                        e.partial_text().unwrap_or_default().to_string(),
                        Some(e.to_string()),
                    ),
                };
                let scores = score_answer(&text, &prepared.prompt.sources, q);
                Some(AnswerResult {
                    text,
                    error,
                    ms: started.elapsed().as_millis() as u64,
                    scores,
                })
            } else {
                None
            };
            results.push(QuestionResult {
                id: q.id.clone(),
                question: q.question.clone(),
                lang: q.language().to_string(),
                cross_language: q.cross_language,
                gold: q.gold.clone(),
                translated: translated.clone(),
                scores,
                retrieved,
                answer,
            });
            tick();
        }
        reports.push(summarize(v, results));
    }
    Ok(Report {
        k: K,
        questions: questions.len(),
        rewrite: options.rewrite,
        translated: translations.iter().filter(|t| t.is_some()).count(),
        rewrite_failures,
        answers: options.answers,
        variants: reports,
    })
}

fn summarize(v: &Variant, results: Vec<QuestionResult>) -> VariantReport {
    let subset = |keep: &dyn Fn(&QuestionResult) -> bool| -> Vec<&QuestionResult> {
        results.iter().filter(|r| keep(r)).collect()
    };
    let metrics =
        |rs: &[&QuestionResult]| mean(&rs.iter().map(|r| &r.scores.metrics).collect::<Vec<_>>());
    let answer_metrics = |rs: &[&QuestionResult]| {
        let answers: Vec<&AnswerResult> = rs.iter().filter_map(|r| r.answer.as_ref()).collect();
        (!answers.is_empty()).then(|| mean_answers(&answers))
    };
    let all = subset(&|_| true);
    let cross = subset(&|r| r.cross_language);
    let mut by_language = BTreeMap::new();
    let mut answers_by_subset = BTreeMap::new();
    for lang in ["en", "zh"] {
        let rs = subset(&|r| r.lang == lang);
        if !rs.is_empty() {
            by_language.insert(lang.to_string(), metrics(&rs));
        }
        if let Some(a) = answer_metrics(&rs) {
            answers_by_subset.insert(lang.to_string(), a);
        }
    }
    if let Some(a) = answer_metrics(&cross) {
        answers_by_subset.insert("cross-language".to_string(), a);
    }
    VariantReport {
        name: v.name.clone(),
        mode: mode_name(v.mode).to_string(),
        candidates: v.settings.candidates,
        vector_weight: v.settings.vector_weight,
        lexical_weight: v.settings.lexical_weight,
        rrf_k: v.settings.rrf_k,
        max_chunks_per_doc: v.settings.max_chunks_per_doc,
        overall: metrics(&all),
        by_language,
        cross_language: metrics(&cross),
        answers: answer_metrics(&all),
        answers_by_subset,
        questions: results,
    }
}

/// The side-by-side table, then the misses of each variant.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let names: Vec<&str> = report.variants.iter().map(|v| v.name.as_str()).collect();
    let width = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(8);
    let _ = writeln!(
        out,
        "{} questions, {} documents ranked per question (one chunk per document)",
        report.questions, report.k
    );
    // Each subset's metrics, one entry per variant.
    let mut subsets: Vec<(String, Vec<Metrics>)> = vec![(
        "all".to_string(),
        report.variants.iter().map(|v| v.overall.clone()).collect(),
    )];
    for lang in ["zh", "en"] {
        if report
            .variants
            .iter()
            .any(|v| v.by_language.contains_key(lang))
        {
            subsets.push((
                lang.to_string(),
                report
                    .variants
                    .iter()
                    .map(|v| v.by_language.get(lang).cloned().unwrap_or_default())
                    .collect(),
            ));
        }
    }
    if report
        .variants
        .iter()
        .any(|v| v.cross_language.questions > 0)
    {
        subsets.push((
            "cross-language".to_string(),
            report
                .variants
                .iter()
                .map(|v| v.cross_language.clone())
                .collect(),
        ));
    }
    for (label, metrics) in &subsets {
        let n = metrics.first().map_or(0, |m| m.questions);
        let _ = writeln!(out, "\n{label} ({n} questions)");
        let _ = writeln!(
            out,
            "  {:<width$}  {:>6} {:>6} {:>6} {:>6} {:>7}",
            "variant", "R@1", "R@5", "R@10", "MRR", "nDCG@10"
        );
        for (v, m) in report.variants.iter().zip(metrics) {
            let _ = writeln!(
                out,
                "  {:<width$}  {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>7.3}",
                v.name, m.recall_at_1, m.recall_at_5, m.recall_at_10, m.mrr_at_10, m.ndcg_at_10
            );
        }
    }
    if report.rewrite {
        let _ = writeln!(
            out,
            "\nretrieved with each question and its translation by the model: {} of {} translated ({} requests failed; the others were empty or not in the other language)",
            report.translated,
            report.questions,
            report.rewrite_failures
        );
    }
    if report.answers {
        render_answers(&mut out, report, width);
    }
    for v in &report.variants {
        let misses: Vec<&QuestionResult> = v.questions.iter().filter(|q| q.is_miss()).collect();
        let _ = writeln!(
            out,
            "\nmisses of {} (no gold document in the top {MISS_RANK}): {}",
            v.name,
            misses.len()
        );
        for q in misses {
            let ranks: Vec<String> = q
                .scores
                .gold_ranks
                .iter()
                .map(|r| r.map_or("-".to_string(), |r| r.to_string()))
                .collect();
            let _ = writeln!(out, "  [{}] {}", q.id, q.question);
            let _ = writeln!(
                out,
                "      gold: {} (rank {})",
                q.gold.join(", "),
                ranks.join(", ")
            );
            for (i, d) in q.retrieved.iter().take(3).enumerate() {
                let _ = writeln!(out, "      {}. {}  {}", i + 1, d.title, d.source);
            }
        }
    }
    out
}

/// The answer table (one row per variant and subset), then the answers
/// that missed keywords or cited nothing valid.
fn render_answers(out: &mut String, report: &Report, width: usize) {
    let pct = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{:.0} %", x * 100.0));
    let _ = writeln!(
        out,
        "\nanswers (keywords: share of answer_keywords in the answer; citing: answers with [n]; valid: citing answers whose every [n] is a source; gold cited / gold in prompt: answers citing a gold document / prompts holding one; language: answers in the question's language)"
    );
    let _ = writeln!(
        out,
        "  {:<width$}  {:<20} {:>9} {:>7} {:>7} {:>11} {:>14} {:>9} {:>7}",
        "variant",
        "subset",
        "keywords",
        "citing",
        "valid",
        "gold cited",
        "gold in prompt",
        "language",
        "failed"
    );
    for v in &report.variants {
        let rows = v
            .answers
            .iter()
            .map(|a| ("all", a))
            .chain(v.answers_by_subset.iter().map(|(k, a)| (k.as_str(), a)));
        for (subset, a) in rows {
            let _ = writeln!(
                out,
                "  {:<width$}  {:<20} {:>9} {:>7} {:>7} {:>11} {:>14} {:>9} {:>7}",
                v.name,
                format!("{subset} ({})", a.questions),
                pct(a.keyword_coverage),
                pct(Some(a.citing)),
                pct(a.citations_valid),
                pct(Some(a.cites_gold)),
                pct(Some(a.gold_in_context)),
                pct(Some(a.in_question_language)),
                a.failed
            );
        }
    }
    for v in &report.variants {
        let weak: Vec<(&QuestionResult, &AnswerResult)> = v
            .questions
            .iter()
            .filter_map(|q| q.answer.as_ref().map(|a| (q, a)))
            .filter(|(_, a)| {
                a.error.is_some()
                    || !a.scores.keywords_missing.is_empty()
                    || !a.scores.invalid_citations.is_empty()
            })
            .collect();
        let _ = writeln!(
            out,
            "\nanswers of {} missing keywords, citing nothing valid or failed: {}",
            v.name,
            weak.len()
        );
        for (q, a) in weak.iter().take(20) {
            let mut notes = Vec::new();
            if !a.scores.keywords_missing.is_empty() {
                notes.push(format!("missing {}", a.scores.keywords_missing.join(", ")));
            }
            if !a.scores.invalid_citations.is_empty() {
                let list: Vec<String> = a
                    .scores
                    .invalid_citations
                    .iter()
                    .map(|n| format!("[{n}]"))
                    .collect();
                notes.push(format!("cites {} (no such source)", list.join(" ")));
            }
            if let Some(e) = &a.error {
                notes.push(format!("failed: {e}"));
            }
            let _ = writeln!(out, "  [{}] {}", q.id, notes.join("; "));
            let _ = writeln!(out, "      {}", crate::term::snippet(&a.text, 160));
        }
        if weak.len() > 20 {
            let _ = writeln!(out, "  … {} more in --json", weak.len() - 20);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(source: &str) -> Ranked {
        Ranked {
            source: source.to_string(),
            path: String::new(),
            title: String::new(),
        }
    }

    fn ranking(sources: &[&str]) -> Vec<Ranked> {
        sources.iter().map(|s| doc(s)).collect()
    }

    fn gold(g: &[&str]) -> Vec<String> {
        g.iter().map(|s| s.to_string()).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    const A: &str = "http://127.0.0.1:8719/a.com/x/index.html";
    const B: &str = "http://127.0.0.1:8719/b.com/y.html";
    const C: &str = "https://c.org/z";

    #[test]
    fn one_gold_at_rank_one() {
        let s = score(&ranking(&[A, B, C]), &gold(&["a.com/x/index.html"])).unwrap();
        assert_eq!(s.gold_ranks, vec![Some(1)]);
        assert_eq!(
            (
                s.metrics.recall_at_1,
                s.metrics.recall_at_5,
                s.metrics.recall_at_10
            ),
            (1.0, 1.0, 1.0)
        );
        assert_eq!(s.metrics.mrr_at_10, 1.0);
        assert_eq!(s.metrics.ndcg_at_10, 1.0);
    }

    #[test]
    fn one_gold_at_rank_three() {
        let s = score(&ranking(&[B, C, A]), &gold(&["a.com/x/index.html"])).unwrap();
        assert_eq!(s.gold_ranks, vec![Some(3)]);
        assert_eq!(s.metrics.recall_at_1, 0.0);
        assert_eq!(s.metrics.recall_at_5, 1.0);
        assert!(close(s.metrics.mrr_at_10, 1.0 / 3.0));
        // DCG 1/log2(4) = 0.5, ideal 1.
        assert!(close(s.metrics.ndcg_at_10, 0.5));
    }

    #[test]
    fn two_golds_one_found() {
        // Golds at ranks 2 and absent: recall 1/2, MRR 1/2,
        // nDCG = (1/log2 3) / (1 + 1/log2 3).
        let s = score(&ranking(&[C, A]), &gold(&["a.com/x", "d.net/missing"])).unwrap();
        assert_eq!(s.gold_ranks, vec![Some(2), None]);
        assert_eq!(s.metrics.recall_at_1, 0.0);
        assert_eq!(s.metrics.recall_at_5, 0.5);
        assert_eq!(s.metrics.recall_at_10, 0.5);
        assert_eq!(s.metrics.mrr_at_10, 0.5);
        let d = 1.0 / 3f64.log2();
        assert!(close(s.metrics.ndcg_at_10, d / (1.0 + d)));
    }

    #[test]
    fn both_golds_at_the_top_is_perfect() {
        let s = score(&ranking(&[B, A, C]), &gold(&["a.com/x", "b.com/y.html"])).unwrap();
        assert_eq!(s.gold_ranks, vec![Some(2), Some(1)]);
        assert_eq!(s.metrics.recall_at_1, 0.5);
        assert_eq!(s.metrics.recall_at_5, 1.0);
        assert_eq!(s.metrics.ndcg_at_10, 1.0);
    }

    #[test]
    fn duplicates_of_a_document_count_once() {
        // A at 1 and again at 2: the second adds nothing, and the slot stays used.
        let s = score(&ranking(&[A, A, B]), &gold(&["a.com/x", "b.com/y.html"])).unwrap();
        assert_eq!(s.gold_ranks, vec![Some(1), Some(3)]);
        let ideal = 1.0 + 1.0 / 3f64.log2();
        assert!(close(s.metrics.ndcg_at_10, (1.0 + 0.5) / ideal));
        // A gold listed twice is one gold document.
        let s = score(&ranking(&[A]), &gold(&["a.com/x", "a.com/x/index.html"])).unwrap();
        assert_eq!(s.gold_ranks, vec![Some(1), Some(1)]);
        assert_eq!(s.metrics.recall_at_1, 1.0);
        assert_eq!(s.metrics.ndcg_at_10, 1.0);
    }

    #[test]
    fn gold_not_retrieved_or_beyond_k_scores_zero() {
        let mut long: Vec<Ranked> = (0..K).map(|i| doc(&format!("https://n{i}.io/"))).collect();
        long.push(doc(A));
        let s = score(&long, &gold(&["a.com/x"])).unwrap();
        assert_eq!(s.gold_ranks, vec![None]);
        assert_eq!(
            (
                s.metrics.recall_at_10,
                s.metrics.mrr_at_10,
                s.metrics.ndcg_at_10
            ),
            (0.0, 0.0, 0.0)
        );
        let s = score(&[], &gold(&["a.com/x"])).unwrap();
        assert_eq!(s.metrics.recall_at_10, 0.0);
    }

    #[test]
    fn empty_gold_cannot_be_scored() {
        assert!(score(&ranking(&[A]), &[]).is_none());
    }

    #[test]
    fn ties_keep_the_ranking_order() {
        // Two gold documents: whichever comes first in the list gets rank 1.
        let s = score(&ranking(&[B, A]), &gold(&["a.com/x", "b.com/y.html"])).unwrap();
        assert_eq!(s.metrics.mrr_at_10, 1.0);
        assert_eq!(s.gold_ranks, vec![Some(2), Some(1)]);
    }

    #[test]
    fn mean_averages_questions() {
        let a = score(&ranking(&[A]), &gold(&["a.com/x"])).unwrap();
        let b = score(&ranking(&[B, C, A]), &gold(&["a.com/x"])).unwrap();
        let c = score(&ranking(&[B]), &gold(&["a.com/x"])).unwrap();
        let m = mean(&[&a.metrics, &b.metrics, &c.metrics]);
        assert_eq!(m.questions, 3);
        assert!(close(m.recall_at_1, 1.0 / 3.0));
        assert!(close(m.recall_at_5, 2.0 / 3.0));
        assert!(close(m.mrr_at_10, (1.0 + 1.0 / 3.0) / 3.0));
        assert!(close(m.ndcg_at_10, 0.5));
        assert_eq!(mean(&[]), Metrics::default());
    }

    #[test]
    fn gold_matching_rules() {
        let d = doc("http://127.0.0.1:8719/github.com/microsoft/graphrag/index.html");
        assert!(matches(&d, "github.com/microsoft/graphrag/index.html"));
        assert!(matches(
            &d,
            "https://github.com/microsoft/graphrag/index.html"
        ));
        assert!(matches(&d, "microsoft/graphrag/index.html"));
        assert!(matches(&d, "github.com/microsoft/graphrag/"));
        assert!(!matches(&d, "soft/graphrag/index.html"));
        assert!(!matches(&d, "github.com/microsoft/other/index.html"));
        assert!(matches(
            &doc("http://localhost:9000/github.com/microsoft/graphrag/index.html"),
            "github.com/microsoft/graphrag/index.html"
        ));
        assert!(matches(&doc(C), "https://c.org/z"));
        assert!(matches(&doc(C), "c.org/z"));
        // Percent-encoding on either side.
        let zh = doc("http://127.0.0.1:8719/h.io/%E7%AC%AC%E4%B8%80.html");
        assert!(matches(&zh, "h.io/第一.html"));
        assert!(matches(
            &doc("http://h.io/第一.html"),
            "h.io/%E7%AC%AC%E4%B8%80.html"
        ));
        // Local notes by corpus path.
        let note = Ranked {
            source: "corpus/notes/a.md".into(),
            path: "notes/a.md".into(),
            title: String::new(),
        };
        assert!(matches(&note, "notes/a.md"));
        assert!(matches(&note, "corpus/notes/a.md"));
        assert!(!matches(&note, "a.com/x"));
    }

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.jsonl");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn loads_questions_and_names_bad_lines() {
        let (_d, p) = write(
            "{\"id\":\"1\",\"question\":\"什么是RAG？\",\"gold\":[\"a.com/x\"]}\n\n{\"id\":\"2\",\"question\":\"What is LoRA?\",\"gold\":[\"b.com\"],\"lang\":\"zh\",\"cross_language\":true,\"answer_keywords\":[\"rank\"]}\n",
        );
        let qs = load_questions(&p).unwrap();
        assert_eq!(qs.len(), 2);
        assert_eq!(qs[0].language(), "zh");
        assert_eq!(qs[1].language(), "zh");
        assert!(qs[1].cross_language);

        for (text, line, needle) in [
            ("{\"id\":\"1\",\"question\":\"q\",\"gold\":[\"a\"]}\nnot json\n", 2, "expected"),
            ("{\"id\":\"1\",\"question\":\"q\",\"gold\":[]}\n", 1, "empty \"gold\""),
            ("{\"id\":\"1\",\"question\":\"q\"}\n", 1, "gold"),
            ("{\"id\":\"1\",\"question\":\" \",\"gold\":[\"a\"]}\n", 1, "question"),
            ("{\"id\":\"1\",\"question\":\"q\",\"gold\":[\"a\"],\"lang\":\"fr\"}\n", 1, "lang"),
            ("{\"id\":\"1\",\"question\":\"q\",\"gold\":[\"a\"]}\n{\"id\":\"1\",\"question\":\"q\",\"gold\":[\"a\"]}\n", 2, "duplicate"),
            ("{\"id\":\"1\",\"question\":\"q\",\"gold\":[\"a\"],\"extra\":1}\n", 1, "extra"),
            ("{\"id\":\"1\",\"question\":\"q\",\"gold\":[\"https://\"]}\n", 1, "names no document"),
        ] {
            let (_d, p) = write(text);
            let err = load_questions(&p).unwrap_err().to_string();
            let prefix = format!("{}:{line}: ", p.display());
            assert!(err.starts_with(&prefix), "{err}");
            assert!(err.contains(needle), "{err}");
        }
        let (_d, p) = write("\n\n");
        assert!(matches!(load_questions(&p), Err(EvalError::NoQuestions(_))));
    }

    #[test]
    fn parses_variants() {
        let base = Retrieve::default();
        let vs = parse_variants(
            "hybrid, vector,lexical,hybrid:lexical_weight=0.5:rrf_k=30:candidates=80",
            &base,
        )
        .unwrap();
        let names: Vec<&str> = vs.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "hybrid",
                "vector",
                "lexical",
                "hybrid:lexical_weight=0.5:rrf_k=30:candidates=80"
            ]
        );
        assert_eq!(vs[1].mode, RetrieveMode::Vector);
        assert!(vs.iter().all(|v| v.settings.max_chunks_per_doc == 1));
        assert_eq!(vs[0].settings.lexical_weight, base.lexical_weight);
        assert_eq!(vs[3].settings.lexical_weight, 0.5);
        assert_eq!(vs[3].settings.rrf_k, 30.0);
        assert_eq!(vs[3].settings.candidates, 80);
        // Answers keep the configured per-document cap unless the variant sets one.
        assert_eq!(
            vs[0].answer_settings.max_chunks_per_doc,
            base.max_chunks_per_doc
        );
        assert_eq!(vs[3].answer_settings.rrf_k, 30.0);
        let capped = parse_variants("vector:max_chunks_per_doc=3", &base).unwrap();
        assert_eq!(capped[0].settings.max_chunks_per_doc, 3);
        assert_eq!(capped[0].answer_settings.max_chunks_per_doc, 3);
        for bad in [
            "",
            "fuzzy",
            "hybrid:rrf_k",
            "hybrid:rrf_k=x",
            "hybrid:rrf_k=-1",
            "hybrid:colour=red",
        ] {
            assert!(parse_variants(bad, &base).is_err(), "{bad}");
        }
    }

    fn source(number: usize, location: &str, path: &str) -> Source {
        Source {
            number,
            title: format!("title {number}"),
            location: location.to_string(),
            heading: String::new(),
            text: String::new(),
            chunk_id: number as i64,
            path: path.to_string(),
        }
    }

    fn question(text: &str, golds: &[&str], keywords: &[&str]) -> Question {
        Question {
            id: "q".into(),
            question: text.into(),
            gold: gold(golds),
            answer_keywords: keywords.iter().map(|s| s.to_string()).collect(),
            lang: None,
            cross_language: false,
        }
    }

    #[test]
    fn answer_scores_keywords_citations_gold_and_language() {
        let sources = [source(1, A, "web/a.md"), source(2, B, "web/b.md")];
        let q = question(
            "How does vLLM manage memory?",
            &["a.com/x/index.html"],
            &["pagedattention", "KV cache"],
        );
        let s = score_answer(
            "vLLM uses PagedAttention [2]; see also [2, 5].",
            &sources,
            &q,
        );
        assert_eq!(s.keyword_coverage, Some(0.5));
        assert_eq!(s.keywords_missing, ["KV cache"]);
        assert_eq!(s.citations, [2, 5]);
        assert_eq!(s.invalid_citations, [5]);
        assert!(!s.cites_gold, "[2] is b.com, not the gold");
        assert!(s.gold_in_context);
        assert!(s.in_question_language);

        // Citing the gold by its corpus path; no keywords listed; a Chinese
        // answer to an English question.
        let q = question("What is the answer?", &["corpus/web/a.md"], &[]);
        let s = score_answer("答案见[1]。", &sources, &q);
        assert_eq!(s.keyword_coverage, None);
        assert!(s.cites_gold && s.invalid_citations.is_empty());
        assert!(!s.in_question_language);

        // Full-width letters, case and spaces do not hide a keyword.
        let q = question("需要多少显存？", &["c.org/z"], &["6gb"]);
        let s = score_answer("需要 ６ＧＢ 显存", &sources, &q);
        assert_eq!(s.keyword_coverage, Some(1.0));
        assert!(!s.gold_in_context && !s.cites_gold);
        assert!(s.in_question_language);
        // An empty answer is in no language.
        assert!(!score_answer("  ", &sources, &q).in_question_language);
    }

    fn answered(
        text: &str,
        error: bool,
        coverage: Option<f64>,
        citations: &[usize],
        invalid: &[usize],
        gold: bool,
    ) -> AnswerResult {
        AnswerResult {
            text: text.to_string(),
            error: error.then(|| "boom".to_string()),
            ms: 0,
            scores: AnswerScores {
                keyword_coverage: coverage,
                keywords_missing: Vec::new(),
                citations: citations.to_vec(),
                invalid_citations: invalid.to_vec(),
                cites_gold: gold,
                gold_in_context: true,
                in_question_language: !text.is_empty(),
            },
        }
    }

    #[test]
    fn answer_means_count_each_share_over_its_own_base() {
        let a = answered("a [1]", false, Some(1.0), &[1], &[], true);
        let b = answered("b [7]", false, Some(0.5), &[7], &[7], false);
        let c = answered("c", false, None, &[], &[], false);
        let d = answered("", true, Some(0.0), &[], &[], false);
        let m = mean_answers(&[&a, &b, &c, &d]);
        assert_eq!(m.questions, 4);
        assert_eq!(m.failed, 1);
        assert!(
            close(m.keyword_coverage.unwrap(), 0.5),
            "three with keywords"
        );
        assert!(close(m.citing, 0.5));
        assert!(close(m.citations_valid.unwrap(), 0.5), "of the two citing");
        assert!(close(m.cites_gold, 0.25));
        assert!(close(m.gold_in_context, 1.0));
        assert!(close(m.in_question_language, 0.75));
        // Nothing cites: validity has no base.
        let m = mean_answers(&[&c]);
        assert_eq!(m.citations_valid, None);
        assert_eq!(m.keyword_coverage, None);
        assert_eq!(mean_answers(&[]), AnswerMetrics::default());
    }
}
