//! `ragmap eval` end to end: a tiny corpus, a tiny question file, and the
//! numbers the CLI reports for it.

mod common;

use common::*;
use serde_json::Value;

fn corpus(ws: &Workspace) {
    ws.write_doc(
        "web/rag.md",
        "---\ntitle: Retrieval-augmented generation\nurl: \"http://127.0.0.1:9/example.com/rag/index.html\"\n---\n# How RAG works\n\nRetrieval-augmented generation retrieves relevant passages from a document store and gives them to the language model as context, so answers are grounded in sources.\n",
    );
    write_topic_docs(ws);
}

/// Every gold document is first, except one gold of q4 that is not in the corpus.
const QUESTIONS: &str = r#"{"id":"q1","question":"How does retrieval-augmented generation ground answers in sources?","gold":["example.com/rag/index.html"]}
{"id":"q2","question":"红烧肉怎么做？需要放冰糖吗？","gold":["zh/cooking.md"],"answer_keywords":["冰糖"]}
{"id":"q3","question":"How often should I water tomato seedlings?","gold":["corpus/en/garden.md"],"cross_language":true}
{"id":"q4","question":"How does LoRA reduce the memory needed for fine-tuning with low-rank adapters?","gold":["en/finetune.md","notes/not-in-corpus.md"],"lang":"en"}
"#;

fn workspace() -> Workspace {
    let ws = Workspace::new("");
    corpus(&ws);
    std::fs::write(ws.path().join("q.jsonl"), QUESTIONS).unwrap();
    let out = ws.run(&["index"]);
    assert!(out.status.success(), "index failed: {}", stderr(&out));
    ws
}

fn close(v: &Value, expected: f64) -> bool {
    v.as_f64().is_some_and(|x| (x - expected).abs() < 1e-3)
}

#[test]
fn eval_reports_exact_metrics_for_a_clear_cut_corpus() {
    if !model_available() {
        return;
    }
    let ws = workspace();
    let q = ws.path().join("q.jsonl");
    let out = ws.run(&[
        "eval",
        q.to_str().unwrap(),
        "--compare",
        "hybrid,vector,lexical,hybrid:lexical_weight=0.5:rrf_k=30",
        "--json",
    ]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).expect("JSON report");
    assert_eq!(report["k"], 10);
    assert_eq!(report["questions"], 4);
    let variants = report["variants"].as_array().unwrap();
    let names: Vec<&str> = variants
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "hybrid",
            "vector",
            "lexical",
            "hybrid:lexical_weight=0.5:rrf_k=30"
        ]
    );
    assert_eq!(variants[3]["lexical_weight"], 0.5);
    assert_eq!(variants[3]["rrf_k"], 30.0);
    assert_eq!(variants[3]["max_chunks_per_doc"], 1);

    // Hybrid: three single-gold questions answered at rank 1, q4 finds one of
    // its two gold documents at rank 1.
    let hybrid = &variants[0];
    let all = &hybrid["overall"];
    assert_eq!(all["questions"], 4);
    assert!(close(&all["recall_at_1"], 3.5 / 4.0), "{all}");
    assert!(close(&all["recall_at_10"], 3.5 / 4.0), "{all}");
    assert!(close(&all["mrr_at_10"], 1.0), "{all}");
    let q4_ndcg = 1.0 / (1.0 + 1.0 / 3f64.log2());
    assert!(close(&all["ndcg_at_10"], (3.0 + q4_ndcg) / 4.0), "{all}");
    assert_eq!(hybrid["by_language"]["zh"]["questions"], 1);
    assert_eq!(hybrid["by_language"]["en"]["questions"], 3);
    assert!(close(&hybrid["by_language"]["zh"]["recall_at_1"], 1.0));
    assert_eq!(hybrid["cross_language"]["questions"], 1);
    assert!(close(&hybrid["cross_language"]["recall_at_1"], 1.0));

    let per_q = hybrid["questions"].as_array().unwrap();
    assert_eq!(per_q.len(), 4);
    assert_eq!(per_q[0]["gold_ranks"], serde_json::json!([1]));
    assert_eq!(per_q[1]["lang"], "zh");
    assert_eq!(per_q[3]["gold_ranks"], serde_json::json!([1, null]));
    assert!(close(&per_q[3]["recall_at_10"], 0.5));
    // One chunk per document: four documents, four distinct slots.
    let retrieved = per_q[0]["retrieved"].as_array().unwrap();
    assert_eq!(retrieved.len(), 4);
    assert_eq!(
        retrieved[0]["source"],
        "http://127.0.0.1:9/example.com/rag/index.html"
    );
    assert_eq!(retrieved[0]["title"], "Retrieval-augmented generation");

    // The vector side alone ranks these as clearly.
    assert!(close(&variants[1]["overall"]["recall_at_1"], 3.5 / 4.0));

    // Text output: the side-by-side table and no misses.
    let out = ws.run(&["eval", q.to_str().unwrap(), "--compare", "hybrid,vector"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("all (4 questions)"), "{text}");
    assert!(text.contains("cross-language (1 questions)"), "{text}");
    let hybrid_row = text
        .lines()
        .find(|l| l.trim_start().starts_with("hybrid "))
        .unwrap();
    assert!(
        hybrid_row.contains("0.875") && hybrid_row.contains("1.000"),
        "{hybrid_row}"
    );
    assert!(text.contains("misses of hybrid (no gold document in the top 5): 0"));
}

#[test]
fn eval_lists_misses_with_what_was_retrieved_instead() {
    if !model_available() {
        return;
    }
    let ws = workspace();
    let q = ws.path().join("miss.jsonl");
    std::fs::write(
        &q,
        "{\"id\":\"m1\",\"question\":\"How do I grow tomatoes?\",\"gold\":[\"nowhere.org/page\"]}\n",
    )
    .unwrap();
    let out = ws.run(&["eval", q.to_str().unwrap(), "--mode", "vector"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("misses of vector"), "{text}");
    assert!(text.contains("[m1] How do I grow tomatoes?"), "{text}");
    assert!(text.contains("gold: nowhere.org/page (rank -)"), "{text}");
    // The top retrieved document is shown instead.
    assert!(
        text.contains("1. Growing tomatoes  corpus/en/garden.md"),
        "{text}"
    );
}

#[test]
fn a_bad_question_file_is_one_line_naming_file_and_line() {
    // Questions are read before the index or the model: no assets needed.
    let ws = Workspace::new("");
    let q = ws.path().join("bad.jsonl");
    std::fs::write(
        &q,
        "{\"id\":\"1\",\"question\":\"What is RAG?\",\"gold\":[\"a.com/x\"]}\n{\"id\":\"2\",\"question\":\"oops\",\"gold\":\n",
    )
    .unwrap();
    let out = ws.run(&["eval", q.to_str().unwrap()]);
    assert_clean_failure(&out, 1, &format!("{}:2:", q.display()));

    std::fs::write(
        &q,
        "{\"id\":\"1\",\"question\":\"What is RAG?\",\"gold\":[]}\n",
    )
    .unwrap();
    let out = ws.run(&["eval", q.to_str().unwrap()]);
    assert_clean_failure(&out, 1, &format!("{}:1: empty \"gold\"", q.display()));

    let missing = ws.path().join("missing.jsonl");
    let out = ws.run(&["eval", missing.to_str().unwrap()]);
    assert_clean_failure(&out, 1, "missing.jsonl");

    std::fs::write(
        &q,
        "{\"id\":\"1\",\"question\":\"What is RAG?\",\"gold\":[\"a\"]}\n",
    )
    .unwrap();
    let out = ws.run(&["eval", q.to_str().unwrap(), "--compare", "hybrid,fuzzy"]);
    assert_clean_failure(&out, 1, "unknown mode \"fuzzy\"");
}

#[test]
fn the_held_out_question_set_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("eval/heldout.jsonl");
    let questions = ragmap::eval::load_questions(&path).unwrap();
    assert!(questions.len() >= 30);
    let cross: Vec<_> = questions.iter().filter(|q| q.cross_language).collect();
    assert!(cross.len() >= 20);
    assert!(
        cross.iter().any(|q| q.language() == "zh") && cross.iter().any(|q| q.language() == "en")
    );
    // Apart from the development set: no question asked twice.
    let dev = ragmap::eval::load_questions(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("eval/questions.jsonl"),
    )
    .unwrap();
    let asked: std::collections::HashSet<&str> = dev.iter().map(|q| q.question.as_str()).collect();
    for q in &questions {
        assert!(
            !asked.contains(q.question.as_str()),
            "{} is also a development question",
            q.id
        );
        let detected = match ragmap::prompt::detect_language(&q.question) {
            ragmap::prompt::Language::Chinese => "zh",
            ragmap::prompt::Language::English => "en",
        };
        assert_eq!(q.language(), detected, "{}", q.id);
    }
}

#[test]
fn the_development_question_set_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("eval/questions.jsonl");
    let questions = ragmap::eval::load_questions(&path).unwrap();
    assert!(questions.len() >= 64);
    let zh = questions.iter().filter(|q| q.language() == "zh").count();
    assert_eq!(zh * 2, questions.len(), "half Chinese, half English");
    assert!(questions.iter().filter(|q| q.cross_language).count() * 5 >= questions.len());
    let pages: std::collections::HashSet<&String> =
        questions.iter().flat_map(|q| q.gold.iter()).collect();
    assert!(pages.len() >= 35);
    for q in &questions {
        // The stated language agrees with the text.
        let detected = match ragmap::prompt::detect_language(&q.question) {
            ragmap::prompt::Language::Chinese => "zh",
            ragmap::prompt::Language::English => "en",
        };
        assert_eq!(q.language(), detected, "{}", q.id);
        assert!(!q.answer_keywords.is_empty(), "{}", q.id);
    }
    // Every gold page is a mirrored page of the web corpus.
    let Some(webcorpus) = webcorpus() else { return };
    let manifest = std::fs::read_to_string(webcorpus.join("MANIFEST.tsv")).unwrap();
    let mirrored: std::collections::HashSet<&str> = manifest
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').next())
        .map(|p| p.trim_start_matches('/'))
        .collect();
    for g in pages {
        assert!(mirrored.contains(g.as_str()), "{g} is not in MANIFEST.tsv");
    }
}

/// A loopback OpenAI-compatible server whose answers depend on the question:
/// translations for rewrite requests, a canned answer (with chosen citations)
/// per question, HTTP 500 for the LoRA question.
fn scripted_llm() -> ScriptedServer {
    ScriptedServer::start(|req| {
        let body = req.text();
        let answer = if body.contains("into English") {
            "How do I cook braised pork belly?"
        } else if body.contains("翻译成简体中文") {
            "翻译"
        } else if body.contains("ground answers in sources") {
            "It retrieves passages and answers from them [1]."
        } else if body.contains("红烧肉怎么做") {
            "要放冰糖炒出糖色 [1][9]。"
        } else if body.contains("water tomato seedlings") {
            "Water them deeply twice a week."
        } else {
            return openai_error(500, "model crashed");
        };
        openai_stream(&[answer])
    })
}

const ANSWER_QUESTIONS: &str = r#"{"id":"q1","question":"How does retrieval-augmented generation ground answers in sources?","gold":["example.com/rag/index.html"],"answer_keywords":["retrieves","grounded"]}
{"id":"q2","question":"红烧肉怎么做？需要放冰糖吗？","gold":["zh/cooking.md"],"answer_keywords":["冰糖"]}
{"id":"q3","question":"How often should I water tomato seedlings?","gold":["corpus/en/garden.md"],"answer_keywords":["TWICE a week"],"cross_language":true}
{"id":"q4","question":"How does LoRA reduce the memory needed for fine-tuning with low-rank adapters?","gold":["en/finetune.md"],"answer_keywords":["low-rank"]}
"#;

#[test]
fn eval_answers_scores_keywords_and_citations_of_the_models_answers() {
    if !model_available() {
        return;
    }
    let ws = workspace();
    let q = ws.path().join("answers.jsonl");
    std::fs::write(&q, ANSWER_QUESTIONS).unwrap();
    let server = scripted_llm();
    let url = server.url("/v1");
    let env = [("RAGMAP_LLM_URL", url.as_str())];
    let out = ws.run_env(
        &[
            "eval",
            q.to_str().unwrap(),
            "--answers",
            "--rewrite",
            "--json",
        ],
        &env,
    );
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).expect("JSON report");
    assert_eq!(report["answers"], true);
    assert_eq!(report["rewrite"], true);
    assert_eq!(report["translated"], 3);
    assert_eq!(report["rewrite_failures"], 0);
    // The Chinese question was translated; "翻译" is returned for the English
    // ones, which is Chinese, so it is kept too, except for the question
    // naming LoRA: a translation that loses a name is no translation.
    let hybrid = &report["variants"][0];
    let per_q = hybrid["questions"].as_array().unwrap();
    assert_eq!(per_q[1]["translated"], "How do I cook braised pork belly?");
    assert_eq!(per_q[0]["translated"], "翻译");
    assert!(per_q[3]["translated"].is_null(), "{}", per_q[3]);

    let a1 = &per_q[0]["answer"];
    assert!(close(&a1["keyword_coverage"], 0.5), "{a1}");
    assert_eq!(a1["keywords_missing"], serde_json::json!(["grounded"]));
    assert_eq!(a1["citations"], serde_json::json!([1]));
    assert_eq!(a1["cites_gold"], true);
    let a2 = &per_q[1]["answer"];
    assert!(close(&a2["keyword_coverage"], 1.0), "{a2}");
    assert_eq!(a2["invalid_citations"], serde_json::json!([9]));
    // What the model wrote of no source is scored, and not shown.
    assert_eq!(a2["citations"], serde_json::json!([1, 9]));
    let shown = a2["text"].as_str().unwrap();
    assert!(shown.contains("[1]") && !shown.contains("[9]"), "{shown}");
    assert_eq!(a2["cites_gold"], true);
    // Keywords match without regard to case or spacing; no citation at all.
    let a3 = &per_q[2]["answer"];
    assert!(close(&a3["keyword_coverage"], 1.0), "{a3}");
    assert_eq!(a3["citations"], serde_json::json!([]));
    assert_eq!(a3["cites_gold"], false);
    let a4 = &per_q[3]["answer"];
    assert!(
        a4["error"].as_str().unwrap().contains("model crashed"),
        "{a4}"
    );

    let m = &hybrid["answers"];
    assert_eq!(m["questions"], 4);
    assert_eq!(m["failed"], 1);
    assert!(
        close(&m["keyword_coverage"], (0.5 + 1.0 + 1.0 + 0.0) / 4.0),
        "{m}"
    );
    assert!(close(&m["citing"], 0.5), "{m}");
    assert!(close(&m["citations_valid"], 0.5), "{m}");
    assert!(close(&m["cites_gold"], 0.5), "{m}");
    assert!(close(&m["gold_in_context"], 1.0), "{m}");
    assert!(close(&m["in_question_language"], 0.75), "{m}");
    assert_eq!(hybrid["answers_by_subset"]["zh"]["questions"], 1);
    assert_eq!(
        hybrid["answers_by_subset"]["cross-language"]["questions"],
        1
    );

    // The text report: the answer table and the weak answers named.
    let out = ws.run_env(&["eval", q.to_str().unwrap(), "--answers"], &env);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    let row = text
        .lines()
        .find(|l| l.contains("hybrid") && l.contains("all (4)"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        (row.contains("62 %") || row.contains("63 %"))
            && row.contains("50 %")
            && row.contains("100 %"),
        "{row}"
    );
    assert!(text.contains("[q1] missing grounded"), "{text}");
    assert!(text.contains("[q2] cites [9] (no such source)"), "{text}");
    assert!(text.contains("[q4] missing low-rank; failed:"), "{text}");
}

#[test]
fn eval_answers_without_a_model_server_is_exit_5_naming_the_fix() {
    if !model_available() {
        return;
    }
    let ws = workspace();
    let q = ws.path().join("q.jsonl");
    let closed = format!("http://127.0.0.1:{}/v1", closed_port());
    let out = ws.run_env(
        &["eval", q.to_str().unwrap(), "--answers"],
        &[("RAGMAP_LLM_URL", closed.as_str())],
    );
    assert_clean_failure(&out, 5, "start the model server");

    // Ranking alone needs no endpoint, not even a well-formed one.
    let out = ws.run_env(
        &["eval", q.to_str().unwrap(), "--mode", "lexical"],
        &[("RAGMAP_LLM_URL", "::not a url")],
    );
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert!(stdout(&out).contains("all (4 questions)"));
}

#[test]
fn eval_answers_count_the_loops_the_guard_stopped() {
    if !model_available() {
        return;
    }
    let ws = workspace();
    let q = ws.path().join("answers.jsonl");
    std::fs::write(&q, ANSWER_QUESTIONS).unwrap();
    // One answer loops, the others do not.
    let server = ScriptedServer::start(|req| {
        let body = req.text();
        if !body.contains("\"messages\"") {
            return openai_error(404, "File Not Found");
        }
        if body.contains("红烧肉怎么做") {
            let line = "先焯水，再加冰糖炒出糖色 [1]。\n";
            return openai_stream(&[line; 10]);
        }
        openai_stream(&["It retrieves passages [1]."])
    });
    let url = server.url("/v1");
    let env = [("RAGMAP_LLM_URL", url.as_str())];
    let out = ws.run_env(&["eval", q.to_str().unwrap(), "--answers", "--json"], &env);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).expect("JSON report");
    let hybrid = &report["variants"][0];
    let looped = &hybrid["questions"][1]["answer"];
    assert_eq!(looped["looped"], true, "{looped}");
    // What came before the guard stopped it is kept and scored.
    assert_eq!(
        looped["text"].as_str().unwrap().matches("冰糖").count(),
        3,
        "{looped}"
    );
    assert!(close(&looped["keyword_coverage"], 1.0), "{looped}");
    let m = &hybrid["answers"];
    assert!(close(&m["looping"], 0.25), "{m}");
    assert_eq!(m["failed"], 0, "{m}");
    assert!(close(&hybrid["answers_by_subset"]["zh"]["looping"], 1.0));

    let out = ws.run_env(&["eval", q.to_str().unwrap(), "--answers"], &env);
    let text = stdout(&out);
    let row = text
        .lines()
        .find(|l| l.contains("hybrid") && l.contains("all (4)"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains("25 %"), "{row}");
    assert!(
        text.contains("[q2] stopped: the answer was stopped because it kept repeating itself"),
        "{text}"
    );
}
