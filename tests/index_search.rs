//! `ragmap index` / `search` / `status` with the real embedding model and a real index.

mod common;

use common::*;
use ragmap::config::{Config, RetrieveMode};
use ragmap::index::{self, BuildOptions};

const SMALL_CHUNKS: &str = "[chunk]\nmax_tokens = 120\noverlap_tokens = 16\n";

fn topic_corpus(ws: &Workspace) {
    ws.write_doc(
        "zh/rag.md",
        "---\ntitle: 检索增强生成入门\n---\n# 检索增强生成\n\n检索增强生成（RAG）先从知识库中检索与问题相关的文档片段，再把这些片段作为上下文交给大语言模型生成答案，从而减少幻觉并引用最新资料。\n",
    );
    ws.write_doc(
        "en/rag.md",
        "---\ntitle: Retrieval-augmented generation\nurl: \"https://example.com/rag\"\n---\n# How RAG works\n\nRetrieval-augmented generation retrieves relevant passages from a document store and gives them to the language model as context, so answers are grounded in sources.\n",
    );
    write_topic_docs(ws);
}

fn ranked_paths(ws: &Workspace, question: &str, mode: RetrieveMode) -> Vec<String> {
    let config = ws.config();
    let index = ragmap::index::open(&config).unwrap();
    let mut embedder = ragmap::embed::Embedder::load(&config).unwrap();
    let settings = ragmap::config::Retrieve {
        mode,
        top_k: 5,
        ..config.retrieve.clone()
    };
    ragmap::retrieve::retrieve(
        &*index,
        Some(&mut embedder),
        &[question.to_string()],
        &settings,
    )
    .unwrap()
    .into_iter()
    .map(|h| h.chunk.path)
    .collect()
}

fn position(paths: &[String], path: &str) -> usize {
    paths.iter().position(|p| p == path).unwrap_or(usize::MAX)
}

#[test]
fn questions_in_either_language_rank_both_languages_on_topic_first() {
    if !model_available() {
        return;
    }
    let ws = Workspace::new("");
    topic_corpus(&ws);
    ws.build_index();
    for question in [
        "什么是检索增强生成？它如何减少幻觉？",
        "How does retrieval-augmented generation ground answers?",
    ] {
        let ranked = ranked_paths(&ws, question, RetrieveMode::Vector);
        let zh = position(&ranked, "zh/rag.md");
        let en = position(&ranked, "en/rag.md");
        for unrelated in ["zh/cooking.md", "en/garden.md", "en/finetune.md"] {
            let other = position(&ranked, unrelated);
            assert!(zh < other && en < other, "{question}: {ranked:?}");
        }
    }
}

#[test]
fn incremental_index_reembeds_only_changed_documents() {
    if !model_available() {
        return;
    }
    let ws = Workspace::new(SMALL_CHUNKS);
    topic_corpus(&ws);
    let opts = BuildOptions {
        rebuild: false,
        progress: false,
    };
    let first = index::build(&ws.config(), &opts).unwrap();
    assert_eq!(
        (first.added, first.changed, first.deleted, first.unchanged),
        (5, 0, 0, 0)
    );
    assert!(first.rebuilt.is_none());
    let total_chunks = first.chunks_embedded;
    assert!(total_chunks >= 5);

    let again = index::build(&ws.config(), &opts).unwrap();
    assert_eq!(
        (again.added, again.changed, again.deleted, again.unchanged),
        (0, 0, 0, 5)
    );
    assert_eq!(again.chunks_embedded, 0);

    // One edit, one new note, one deletion.
    ws.write_doc(
        "en/garden.md",
        "# Growing tomatoes\n\nTomatoes need full sun and steady watering.\n",
    );
    ws.write_doc(
        "notes/mine.md",
        "# My note\n\nHNSW graphs make approximate nearest neighbour search fast.\n",
    );
    std::fs::remove_file(ws.corpus().join("zh/cooking.md")).unwrap();
    let third = index::build(&ws.config(), &opts).unwrap();
    assert_eq!(
        (third.added, third.changed, third.deleted, third.unchanged),
        (1, 1, 1, 3)
    );
    assert_eq!(
        third.chunks_embedded, 2,
        "exactly the edited and the new document's chunks"
    );

    let status = index::status(&ws.config()).unwrap();
    assert_eq!(status.counts.documents, 5);
    assert!(
        status.changed_since.is_empty(),
        "{:?}",
        status.changed_since
    );

    // The deleted document is gone from both retrievers.
    for mode in [
        RetrieveMode::Vector,
        RetrieveMode::Lexical,
        RetrieveMode::Hybrid,
    ] {
        let ranked = ranked_paths(&ws, "红烧肉 五花肉 冰糖", mode);
        assert!(
            !ranked.iter().any(|p| p == "zh/cooking.md"),
            "{mode:?}: {ranked:?}"
        );
    }
    let ranked = ranked_paths(&ws, "HNSW nearest neighbour", RetrieveMode::Hybrid);
    assert_eq!(ranked.first().map(String::as_str), Some("notes/mine.md"));

    // Changing the chunking settings rebuilds everything, announced once.
    std::fs::write(
        ws.path().join("config.toml"),
        "[chunk]\nmax_tokens = 100\noverlap_tokens = 8\n",
    )
    .unwrap();
    let out = ws.run(&["index"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("rebuilding the whole index: the [chunk] settings changed"),
        "{text}"
    );
    assert!(text.contains("5 added"), "{text}");
}

/// What `--watch` does: one set of loaded models across builds, each build
/// reading only what changed. The kept embedder must embed exactly as a
/// freshly loaded one does.
#[test]
fn builds_sharing_loaded_models_index_as_fresh_builds_do() {
    if !model_available() {
        return;
    }
    let (watched, fresh) = (Workspace::new(SMALL_CHUNKS), Workspace::new(SMALL_CHUNKS));
    topic_corpus(&watched);
    topic_corpus(&fresh);
    let opts = BuildOptions {
        rebuild: false,
        progress: false,
    };
    let mut models = index::Models::default();
    let everything = index::Scope::Everything;
    index::build_in(&watched.config(), &opts, &everything, &mut models).unwrap();
    assert!(models.loaded(), "the first build leaves its models loaded");

    let note = "# LoRA\n\nLoRA trains two small low-rank matrices beside frozen weights, so fine-tuning needs far less memory.\n";
    for ws in [&watched, &fresh] {
        ws.write_doc("en/finetune.md", note);
        ws.write_doc(
            "zh/lora.md",
            "# 低秩适配\n\nLoRA 冻结原模型权重，只训练两个低秩矩阵，显存占用小得多。\n",
        );
    }
    let changed = index::Scope::Paths(["en/finetune.md", "zh/lora.md"].map(String::from).into());
    let second = index::build_in(&watched.config(), &opts, &changed, &mut models).unwrap();
    assert_eq!((second.added, second.changed, second.scanned), (1, 1, 2));
    assert!(second.chunks_embedded >= 2);
    assert!(models.loaded());
    fresh.build_index();

    let scores = |ws: &Workspace, question: &str| -> Vec<(String, String)> {
        let config = ws.config();
        let index = index::open(&config).unwrap();
        let mut embedder = ragmap::embed::Embedder::load(&config).unwrap();
        let settings = ragmap::config::Retrieve {
            mode: RetrieveMode::Vector,
            top_k: 7,
            ..config.retrieve.clone()
        };
        ragmap::retrieve::retrieve(&*index, Some(&mut embedder), &[question.into()], &settings)
            .unwrap()
            .into_iter()
            .map(|h| (h.chunk.path, format!("{:.4}", h.score)))
            .collect()
    };
    for question in ["How does LoRA save memory?", "LoRA 为什么省显存？"] {
        let kept = scores(&watched, question);
        assert_eq!(kept, scores(&fresh, question), "{question}");
        assert!(
            kept[..2].iter().any(|(p, _)| p == "en/finetune.md"),
            "{kept:?}"
        );
    }
}

#[test]
fn a_changed_model_rebuilds_and_a_touched_one_does_not() {
    if !model_available() {
        return;
    }
    // A private copy of the model, so its files can be touched and edited.
    let installed = Config::default().model_dir();
    let models = tempfile::tempdir().unwrap();
    let model_dir = models.path().join("e5");
    std::fs::create_dir_all(&model_dir).unwrap();
    for entry in std::fs::read_dir(&installed).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), model_dir.join(entry.file_name())).unwrap();
    }
    let ws = Workspace::new(&format!(
        "{SMALL_CHUNKS}\n[embed]\nmodel_dir = \"{}\"\n",
        model_dir.display()
    ));
    topic_corpus(&ws);
    let first = ws.build_index();
    assert!(first.rebuilt.is_none());

    // Same bytes, new modification time: re-hashed, same identity, nothing to do.
    let tokenizer = model_dir.join("tokenizer.json");
    let bytes = std::fs::read(&tokenizer).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&tokenizer, &bytes).unwrap();
    let touched = ws.build_index();
    assert!(touched.rebuilt.is_none(), "{:?}", touched.rebuilt);
    assert_eq!(touched.chunks_embedded, 0);

    // Different bytes (still a valid tokenizer): everything is re-embedded.
    let mut edited = bytes.clone();
    edited.push(b'\n');
    std::fs::write(&tokenizer, &edited).unwrap();
    let changed = ws.build_index();
    assert_eq!(
        changed.rebuilt.as_deref(),
        Some("the embedding model changed")
    );
    assert_eq!(changed.chunks_embedded, first.chunks_embedded);
}

#[test]
fn cli_index_search_status_round_trip() {
    if !model_available() {
        return;
    }
    let ws = Workspace::new("");
    topic_corpus(&ws);
    std::fs::write(ws.corpus().join("broken.md"), b"# bad \xff\xfe bytes\n").unwrap();
    let out = ws.run(&["index"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning: skipped corpus/broken.md") && err.contains("UTF-8"),
        "{err}"
    );
    assert!(
        stdout(&out).contains("indexed 5 documents"),
        "{}",
        stdout(&out)
    );

    let out = ws.run(&["search", "LoRA 低秩适配 微调显存", "-k", "2", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let hits: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hits = hits.as_array().unwrap();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0]["path"], "en/finetune.md");
    assert_eq!(hits[0]["heading"], "Fine-tuning with LoRA");

    let out = ws.run(&["search", "retrieval grounded sources"]);
    let text = stdout(&out);
    assert!(text.contains("https://example.com/rag"), "{text}");
    assert!(text.contains("[1]"), "{text}");

    ws.write_doc("en/new.md", "# New\n\nSomething new.\n");
    let out = ws.run(&["status"]);
    let text = stdout(&out);
    assert!(text.contains("documents: 5"), "{text}");
    assert!(text.contains("new: en/new.md"), "{text}");
}

#[test]
fn missing_assets_and_index_fail_with_one_line_naming_the_fix() {
    let ws = Workspace::new("");
    topic_corpus(&ws);
    let empty = tempfile::tempdir().unwrap();
    let empty = empty.path().to_str().unwrap();

    // Whatever is installed, a missing piece is a one-line error naming the set-up command.
    let out = ws.run_env(&["index"], &[("RAGMAP_MODEL_DIR", empty)]);
    assert_clean_failure(&out, 3, "scripts/setup");
    let missing_ort = format!("{empty}/libonnxruntime.so.1.24.4");
    let out = ws.run_env(&["index"], &[("RAGMAP_ORT_DYLIB", missing_ort.as_str())]);
    assert_clean_failure(&out, 3, "scripts/setup");

    if model_available() {
        // With the rest installed, the message names exactly what is missing.
        let out = ws.run_env(&["index"], &[("RAGMAP_MODEL_DIR", empty)]);
        assert!(stderr(&out).contains("model.onnx"), "{}", stderr(&out));
        let out = ws.run_env(&["index"], &[("RAGMAP_ORT_DYLIB", missing_ort.as_str())]);
        assert!(stderr(&out).contains("onnxruntime"), "{}", stderr(&out));
        // A file that is not a shared library at all.
        let fake = format!("{empty}/libfake.so");
        std::fs::write(&fake, b"not a library").unwrap();
        let out = ws.run_env(&["index"], &[("RAGMAP_ORT_DYLIB", fake.as_str())]);
        assert_clean_failure(&out, 3, "scripts/setup");
    }

    let out = ws.run(&["search", "anything"]);
    assert_clean_failure(&out, 4, "ragmap index");
    let out = ws.run(&["status"]);
    assert_clean_failure(&out, 4, "ragmap index");

    let out = ws.run(&["search", "  "]);
    assert_clean_failure(&out, 1, "empty");
}

#[test]
fn corrupt_index_files_name_the_rebuild_command() {
    if !model_available() {
        return;
    }
    let ws = Workspace::new("");
    topic_corpus(&ws);
    ws.build_index();
    let index_dir = ws.path().join("index");
    let vectors = std::fs::read_dir(&index_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "usearch"))
        .unwrap();
    let original = std::fs::read(&vectors).unwrap();

    // Truncated vector file.
    std::fs::write(&vectors, &original[..original.len() / 3]).unwrap();
    let out = ws.run(&["search", "RAG", "--mode", "lexical"]);
    assert_clean_failure(&out, 4, "ragmap index --rebuild");
    // Garbage vector file.
    std::fs::write(&vectors, vec![0x5a; original.len()]).unwrap();
    let out = ws.run(&["search", "RAG", "--mode", "lexical"]);
    assert_clean_failure(&out, 4, "ragmap index --rebuild");
    // `ragmap index` repairs it from the catalogue without re-embedding.
    let repaired = ws.build_index();
    assert_eq!(repaired.chunks_embedded, 0);
    let out = ws.run(&["search", "RAG", "--mode", "lexical"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Garbage catalogue.
    let db = index_dir.join("catalog.sqlite");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::write(
        &db,
        b"this is not a database at all, just some text that is long enough",
    )
    .unwrap();
    let out = ws.run(&["search", "RAG"]);
    assert_clean_failure(&out, 4, "ragmap index --rebuild");
    let out = ws.run(&["index"]);
    assert_clean_failure(&out, 4, "ragmap index --rebuild");
    let out = ws.run(&["index", "--rebuild"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("5 added"), "{}", stdout(&out));
}

#[test]
fn empty_or_missing_corpus_says_so() {
    let ws = Workspace::new("");
    let out = ws.run(&["index"]);
    assert_clean_failure(&out, 1, "holds no markdown documents");
    std::fs::remove_dir(ws.corpus()).unwrap();
    let out = ws.run(&["index"]);
    assert_clean_failure(&out, 1, "does not exist");
}

#[test]
fn bad_config_is_one_line_naming_the_file() {
    let ws = Workspace::new("[retrieve]\ntop_k = \"many\"\n");
    let out = ws.run(&["status"]);
    assert_clean_failure(&out, 1, "config.toml");
}
