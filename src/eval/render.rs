//! The text report: the side-by-side table, answers, then misses.

use std::fmt::Write as _;

use super::answers::AnswerResult;
use super::metrics::Metrics;
use super::run::{QuestionResult, Report};
use super::MISS_RANK;

/// The side-by-side table, then the misses of each variant.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let width = report
        .variants
        .iter()
        .map(|v| v.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(8);
    let _ = writeln!(
        out,
        "{} questions, {} documents ranked per question (one chunk per document)",
        report.questions, report.k
    );
    for (label, metrics) in &subsets(report) {
        render_metrics(&mut out, report, label, metrics, width);
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
        render_misses(&mut out, &v.name, &v.questions);
    }
    out
}

/// Each subset of the questions (all, by language, cross-language) with
/// its metrics, one entry per variant.
fn subsets(report: &Report) -> Vec<(String, Vec<Metrics>)> {
    let variants = &report.variants;
    let mut subsets = vec![(
        "all".to_string(),
        variants.iter().map(|v| v.overall.clone()).collect(),
    )];
    for lang in ["zh", "en"] {
        if variants.iter().any(|v| v.by_language.contains_key(lang)) {
            let metrics = variants
                .iter()
                .map(|v| v.by_language.get(lang).cloned().unwrap_or_default())
                .collect();
            subsets.push((lang.to_string(), metrics));
        }
    }
    if variants.iter().any(|v| v.cross_language.questions > 0) {
        let metrics = variants.iter().map(|v| v.cross_language.clone()).collect();
        subsets.push(("cross-language".to_string(), metrics));
    }
    subsets
}

/// One subset's table: a row of metrics per variant.
fn render_metrics(
    out: &mut String,
    report: &Report,
    label: &str,
    metrics: &[Metrics],
    width: usize,
) {
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

/// The questions of one variant with no gold document in the top
/// [`MISS_RANK`], with the gold ranks and what came first instead.
fn render_misses(out: &mut String, variant: &str, questions: &[QuestionResult]) {
    let misses: Vec<&QuestionResult> = questions.iter().filter(|q| q.is_miss()).collect();
    let _ = writeln!(
        out,
        "\nmisses of {variant} (no gold document in the top {MISS_RANK}): {}",
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

/// The answer table (one row per variant and subset), then the answers
/// that missed keywords or cited nothing valid.
fn render_answers(out: &mut String, report: &Report, width: usize) {
    let pct = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{:.0} %", x * 100.0));
    let _ = writeln!(
        out,
        "\nanswers (keywords: share of answer_keywords in the answer; citing: answers with [n]; valid: citing answers whose every [n] is a source; gold cited / gold in prompt: answers citing a gold document / prompts holding one; language: answers in the question's language; loops: answers stopped for repeating themselves)"
    );
    let _ = writeln!(
        out,
        "  {:<width$}  {:<20} {:>9} {:>7} {:>7} {:>11} {:>14} {:>9} {:>6} {:>7}",
        "variant",
        "subset",
        "keywords",
        "citing",
        "valid",
        "gold cited",
        "gold in prompt",
        "language",
        "loops",
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
                "  {:<width$}  {:<20} {:>9} {:>7} {:>7} {:>11} {:>14} {:>9} {:>6} {:>7}",
                v.name,
                format!("{subset} ({})", a.questions),
                pct(a.keyword_coverage),
                pct(Some(a.citing)),
                pct(a.citations_valid),
                pct(Some(a.cites_gold)),
                pct(Some(a.gold_in_context)),
                pct(Some(a.in_question_language)),
                pct(Some(a.looping)),
                a.failed
            );
        }
    }
    for v in &report.variants {
        render_weak_answers(out, &v.name, &v.questions);
    }
}

/// One variant's answers that missed keywords, cited nothing valid, looped or failed.
fn render_weak_answers(out: &mut String, variant: &str, questions: &[QuestionResult]) {
    let weak: Vec<(&QuestionResult, &AnswerResult)> = questions
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
        "\nanswers of {variant} missing keywords, citing nothing valid, looping or failed: {}",
        weak.len()
    );
    for (q, a) in weak.iter().take(20) {
        let _ = writeln!(out, "  [{}] {}", q.id, weak_notes(a).join("; "));
        let _ = writeln!(out, "      {}", crate::term::snippet(&a.text, 160));
    }
    if weak.len() > 20 {
        let _ = writeln!(out, "  … {} more in --json", weak.len() - 20);
    }
}

/// What is wrong with an answer: keywords missing, citations of no source,
/// the error that ended it.
fn weak_notes(a: &AnswerResult) -> Vec<String> {
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
        let how = if a.looped { "stopped" } else { "failed" };
        notes.push(format!("{how}: {e}"));
    }
    notes
}
