//! Running the evaluation: every question through every variant, and the
//! report it makes.

use std::collections::BTreeMap;

use serde::Serialize;

use super::answers::{mean_answers, score_answer, AnswerMetrics, AnswerResult};
use super::metrics::{mean, score, Metrics, RankedDoc, Scores};
use super::questions::Question;
use super::variants::{mode_name, Variant};
use super::{EvalError, K, MISS_RANK};
use crate::answer::{Answerer, Prepared};
use crate::query::Query;
use crate::retrieve::Retriever;

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
    pub retrieved: Vec<RankedDoc>,
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

/// Runs every question through every variant. `answerer` is needed for
/// translating (`options.rewrite`) and answering (`options.answers`). `tick`
/// is called once per translation and once per question and variant, for
/// progress.
pub async fn run(
    retriever: &mut Retriever,
    answerer: Option<&Answerer>,
    questions: &[Question],
    variants: &[Variant],
    options: RunOptions,
    tick: &mut dyn FnMut(),
) -> Result<Report, EvalError> {
    let needs_model = options.rewrite || options.answers;
    let answerer = match answerer {
        Some(a) => Some(a),
        None if needs_model => return Err(EvalError::NeedsModel),
        None => None,
    };
    let (queries, rewrite_failures) = match (options.rewrite, answerer) {
        (true, Some(answerer)) => translated(answerer, questions, tick).await?,
        _ => (
            questions.iter().map(|q| Query::new(&q.question)).collect(),
            0,
        ),
    };
    let answerer = answerer.filter(|_| options.answers);
    let mut reports = Vec::new();
    for v in variants {
        let mut results = Vec::new();
        for (q, query) in questions.iter().zip(&queries) {
            results.extend(run_question(retriever, answerer, v, q, query).await?);
            tick();
        }
        reports.push(summarize(v, results));
    }
    Ok(Report {
        k: K,
        questions: questions.len(),
        rewrite: options.rewrite,
        translated: queries.iter().filter(|q| q.translation().is_some()).count(),
        rewrite_failures,
        answers: options.answers,
        variants: reports,
    })
}

/// Each question's query with its translation by the model, as `ask` makes
/// it, and how many requests failed; an unreachable model stops the run.
async fn translated(
    answerer: &Answerer,
    questions: &[Question],
    tick: &mut dyn FnMut(),
) -> Result<(Vec<Query>, usize), EvalError> {
    let mut queries = Vec::with_capacity(questions.len());
    let mut failures = 0;
    for q in questions {
        let rewrite = answerer.query(&[], &q.question).await;
        if let Some(source) = rewrite.unreachable {
            return Err(EvalError::Unreachable {
                id: q.id.clone(),
                source,
            });
        }
        failures += rewrite.failed_requests;
        queries.push(rewrite.query);
        tick();
    }
    Ok((queries, failures))
}

/// One question through one variant: its ranking scored and, with an
/// `answerer`, its answer; `None` when the question has no gold document.
async fn run_question(
    retriever: &mut Retriever,
    answerer: Option<&Answerer>,
    v: &Variant,
    q: &Question,
    query: &Query,
) -> Result<Option<QuestionResult>, EvalError> {
    let retrieve_error = |source| EvalError::Retrieve {
        id: q.id.clone(),
        source,
    };
    retriever.set_settings(v.settings.clone());
    let hits = retriever.search(query).map_err(retrieve_error)?;
    let retrieved: Vec<RankedDoc> = hits.iter().map(RankedDoc::from).collect();
    // Gold lists are checked non-empty on load.
    let Some(scores) = score(&retrieved, &q.gold) else {
        return Ok(None);
    };
    let answer = match answerer {
        Some(answerer) => {
            retriever.set_settings(v.answer_settings.clone());
            let passages = async |query: &Query| retriever.passages(query);
            let mut prepared = answerer
                .prepare_query(query.clone(), passages)
                .await
                .map_err(retrieve_error)?;
            Some(answer(answerer, &mut prepared, q).await?)
        }
        None => None,
    };
    Ok(Some(QuestionResult {
        id: q.id.clone(),
        question: q.question.clone(),
        lang: q.language().to_string(),
        cross_language: q.cross_language,
        gold: q.gold.clone(),
        translated: query.translation().map(str::to_string),
        scores,
        retrieved,
        answer,
    }))
}

/// Answers one question as `ask` would and scores the answer; a failed
/// answer is kept with what arrived, an unreachable endpoint stops the run.
async fn answer(
    answerer: &Answerer,
    prepared: &mut Prepared,
    q: &Question,
) -> Result<AnswerResult, EvalError> {
    let started = std::time::Instant::now();
    let mut sink = |_: &str| {};
    let result = answerer.answer(prepared, &[], &mut sink).await;
    let looped = matches!(result, Err(crate::llm::LlmError::Repetition { .. }));
    let (text, removed, error) = match result {
        Ok(outcome) => (outcome.text, outcome.removed_citations, None),
        Err(source) if source.is_unreachable() => {
            return Err(EvalError::Unreachable {
                id: q.id.clone(),
                source,
            })
        }
        Err(e) => (
            e.partial_text().unwrap_or_default().to_string(),
            Vec::new(),
            Some(e.to_string()),
        ),
    };
    let scores = score_answer(&text, &removed, &prepared.prompt.sources, q);
    Ok(AnswerResult {
        text,
        error,
        looped,
        ms: started.elapsed().as_millis() as u64,
        scores,
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
        mode: mode_name(v.settings.mode).to_string(),
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
