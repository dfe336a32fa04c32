//! The conventions users bring from other tools, tried from the command line
//! against scripted model servers: OPENAI_BASE_URL, OLLAMA_HOST as Ollama
//! reads it, `ragmap models`, `ragmap config`, RAGMAP_<SECTION>_<KEY>,
//! workspace discovery, `ask` words and stdin, `-q`/`-v`, completions and the
//! man page, front matter of other tools, collapsed source lines.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

/// Variables a developer's shell may hold that would change the outcome.
const CLEARED: &[&str] = &[
    "RAGMAP_HOME",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "OLLAMA_HOST",
    "RAGMAP_LLM_URL",
    "RAGMAP_LLM_BASE_URL",
    "RAGMAP_LLM_MODEL",
    "RAGMAP_LLM_PROVIDER",
];

/// The real binary in `cwd` with `args`, `env` and `input` on stdin.
fn ragmap(cwd: &Path, args: &[&str], env: &[(&str, &str)], input: &str) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ragmap"));
    cmd.current_dir(cwd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in CLEARED {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// `ragmap -C WS args` with `env`.
fn run(ws: &Workspace, args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = ws.path().display().to_string();
    let mut full = vec!["-C", dir.as_str()];
    full.extend_from_slice(args);
    ragmap(ws.path(), &full, env, "")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}; stderr: {}",
        out.status.code(),
        stderr(out)
    );
    stdout(out)
}

/// An OpenAI-compatible server listing `ids` and answering chats with `answer`.
fn openai_server(ids: &'static [&'static str], answer: &'static [&'static str]) -> ScriptedServer {
    ScriptedServer::start(move |req| match req.path.as_str() {
        "/v1/models" => openai_models(ids),
        "/v1/chat/completions" => openai_stream(answer),
        _ => openai_error(404, "File Not Found"),
    })
}

// ---------------------------------------------------------------- endpoints

#[test]
fn openai_base_url_names_the_endpoint_when_nothing_else_does() {
    let server = openai_server(&["qwen2.5-7b", "smollm2"], &["hi"]);
    let ws = Workspace::new("");
    let base = server.url("/v1");
    let closed = format!("http://127.0.0.1:{}/v1", closed_port());

    let out = run(&ws, &["models"], &[("OPENAI_BASE_URL", &base)]);
    assert_eq!(ok(&out), "qwen2.5-7b\nsmollm2\n");

    // RAGMAP_LLM_URL, config.toml and --base-url each come before it.
    let out = run(
        &ws,
        &["models"],
        &[("OPENAI_BASE_URL", &base), ("RAGMAP_LLM_URL", &closed)],
    );
    assert_clean_failure(&out, 5, "connection refused");
    let named = Workspace::new(&format!("[llm]\nbase_url = \"{closed}\"\n"));
    let out = run(&named, &["models"], &[("OPENAI_BASE_URL", &base)]);
    assert_clean_failure(&out, 5, &closed);
    let out = run(
        &named,
        &["models", "--base-url", &base],
        &[("RAGMAP_LLM_URL", &closed)],
    );
    assert_eq!(ok(&out), "qwen2.5-7b\nsmollm2\n");

    // Not for Ollama: it has its own variable.
    let out = run(
        &ws,
        &["config", "--provider", "ollama"],
        &[("OPENAI_BASE_URL", &base)],
    );
    assert!(
        ok(&out).contains("endpoint http://127.0.0.1:11434 (default)"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn ollama_host_in_the_forms_ollama_accepts_reaches_the_server() {
    let server = ScriptedServer::start(|req| match req.path.as_str() {
        "/api/tags" => ollama_tags(&["qwen2.5:7b", "llama3.2:1b"]),
        _ => Reply::json(404, r#"{"error":"not found"}"#),
    });
    let ws = Workspace::new("");
    let port = server.port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{port}/"),
        format!("\"127.0.0.1:{port}\""),
        format!(" '127.0.0.1:{port}' "),
        format!(":{port}"),
    ] {
        let out = run(
            &ws,
            &["models", "--provider", "ollama"],
            &[("OLLAMA_HOST", &host)],
        );
        assert_eq!(
            ok(&out),
            "qwen2.5:7b\nllama3.2:1b\n",
            "OLLAMA_HOST={host:?}"
        );
    }
    // Port by scheme, as Ollama does: http 80, https 443, none 11434.
    for (host, endpoint) in [
        ("http://example.com", "http://example.com:80"),
        ("https://example.com", "https://example.com:443"),
        ("example.com", "http://example.com:11434"),
        ("[::1]:1337", "http://[::1]:1337"),
        (
            "https://example.com/ollama",
            "https://example.com:443/ollama",
        ),
    ] {
        let out = run(
            &ws,
            &["config", "--provider", "ollama"],
            &[("OLLAMA_HOST", host)],
        );
        let text = ok(&out);
        assert!(
            text.contains(&format!("endpoint {endpoint} (env OLLAMA_HOST)")),
            "OLLAMA_HOST={host:?}: {text}"
        );
    }
}

#[test]
fn provider_auto_finds_a_local_server_and_one_of_its_chat_models() {
    // The default OpenAI-compatible address first, held here by a scripted server.
    let ws = Workspace::new("");
    let Some(local) = ScriptedServer::start_at(8080, |req| match req.path.as_str() {
        "/v1/models" => openai_models(&["SmolLM2-135M-Instruct-Q8_0.gguf"]),
        _ => openai_error(404, "File Not Found"),
    }) else {
        unavailable::<()>("127.0.0.1:8080 is in use by another program");
        return;
    };
    let ollama = ScriptedServer::start(|req| match req.path.as_str() {
        "/api/tags" => ollama_tags(&["nomic-embed-text:latest", "qwen2.5:7b", "llama3.2:1b"]),
        _ => Reply::json(404, r#"{"error":"not found"}"#),
    });
    let host = format!("127.0.0.1:{}", ollama.port());
    let out = run(&ws, &["models"], &[("OLLAMA_HOST", &host)]);
    assert_eq!(ok(&out), "SmolLM2-135M-Instruct-Q8_0.gguf\n");
    assert_eq!(
        stderr(&out),
        "ragmap: answering with an OpenAI-compatible server at http://127.0.0.1:8080/v1, model \"SmolLM2-135M-Instruct-Q8_0.gguf\" (the first chat model it lists; provider auto)\n"
    );
    drop(local);

    // Nothing there: Ollama at OLLAMA_HOST, with a chat model, not the embedding one.
    let out = run(&ws, &["config", "--check"], &[("OLLAMA_HOST", &host)]);
    let text = ok(&out);
    assert!(
        stderr(&out).contains(&format!(
            "answering with Ollama at http://{host}, model \"qwen2.5:7b\""
        )),
        "{}",
        stderr(&out)
    );
    assert!(text.contains("provider = \"ollama\""), "{text}");
    assert!(text.contains("# model \"qwen2.5:7b\": listed"), "{text}");
    // -q keeps the line to itself; a model named anywhere is kept.
    let out = run(
        &ws,
        &["-q", "models"],
        &[("OLLAMA_HOST", &host), ("RAGMAP_LLM_MODEL", "llama3.2:1b")],
    );
    assert_eq!(stderr(&out), "");
    let out = run(
        &ws,
        &["config", "--check", "-m", "llama3.2:1b"],
        &[("OLLAMA_HOST", &host)],
    );
    assert!(
        stderr(&out).contains("model \"llama3.2:1b\" (configured"),
        "{}",
        stderr(&out)
    );
    // An endpoint named anywhere is used as it is, nothing probed.
    let before = ollama.requests().len();
    let out = run(
        &ws,
        &["models", "--base-url", &format!("http://{host}/v1")],
        &[],
    );
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(!stderr(&out).contains("provider auto"), "{}", stderr(&out));
    assert_eq!(ollama.requests().len(), before + 1);
}

#[test]
fn models_reports_endpoint_errors_on_one_line() {
    let server = ScriptedServer::always(openai_error(401, "invalid api key"));
    let ws = Workspace::new("");
    let out = run(&ws, &["models", "--base-url", &server.url("/v1")], &[]);
    assert_clean_failure(&out, 6, "invalid api key");
    // The key goes to the server that lists the models, never to the screen.
    let server = openai_server(&["m"], &["hi"]);
    let out = run(
        &ws,
        &["models", "--base-url", &server.url("/v1")],
        &[("OPENAI_API_KEY", "sk-secret-123")],
    );
    assert_eq!(ok(&out), "m\n");
    assert_eq!(
        server.requests()[0].header("authorization"),
        Some("Bearer sk-secret-123")
    );
}

// ---------------------------------------------------------------- configuration

#[test]
fn invalid_environment_values_are_errors_naming_the_variable() {
    let ws = Workspace::new("");
    for (var, value) in [
        ("RAGMAP_LLM_PROVIDER", "bogus"),
        ("RAGMAP_RETRIEVE_TOP_K", "lots"),
        ("RAGMAP_SERVER_PORT", "99999"),
    ] {
        let out = run(&ws, &["config"], &[(var, value)]);
        assert_clean_failure(&out, 1, var);
    }
    // Case does not matter for a provider name; an empty variable is unset.
    let out = run(
        &ws,
        &["config"],
        &[
            ("RAGMAP_LLM_PROVIDER", "Ollama"),
            ("RAGMAP_RETRIEVE_TOP_K", ""),
        ],
    );
    let text = ok(&out);
    assert!(
        text.contains("provider = \"ollama\"  # env RAGMAP_LLM_PROVIDER"),
        "{text}"
    );
}

#[test]
fn config_shows_every_value_with_its_origin_and_keys_only_as_present() {
    let ws = Workspace::new("[retrieve]\ntop_k = 3\n\n[llm]\nmodel = \"from-file\"\n");
    let out = run(
        &ws,
        &["config", "--temperature", "0.5", "-k", "4"],
        &[
            ("RAGMAP_LLM_MODEL", "from-env"),
            ("RAGMAP_CHUNK_MAX_TOKENS", "200"),
            ("OPENAI_API_KEY", "sk-never-shown"),
        ],
    );
    let text = ok(&out);
    for line in [
        "top_k = 4  # flag -k",
        "model = \"from-env\"  # env RAGMAP_LLM_MODEL",
        "temperature = 0.5  # flag --temperature",
        "max_tokens = 200  # env RAGMAP_CHUNK_MAX_TOKENS",
        "rrf_k = 10.0  # default; env RAGMAP_RETRIEVE_RRF_K",
        "OPENAI_API_KEY is set (value not shown)",
        "endpoint http://127.0.0.1:8080/v1 (default)",
        "(from -C)",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    assert!(!text.contains("sk-never-shown"), "{text}");
    // The listing is TOML that reads back as the same configuration.
    let back: ragmap::config::Config = toml::from_str(&text).unwrap();
    assert_eq!(back.retrieve.top_k, 4);
    assert_eq!(back.llm.model, "from-env");
    assert_eq!(back.chunk.max_tokens, 200);

    let out = run(&ws, &["config"], &[]);
    let text = ok(&out);
    assert!(text.contains("top_k = 3  # config.toml"), "{text}");
    assert!(text.contains("OPENAI_API_KEY is not set"), "{text}");
}

#[test]
fn config_check_pings_the_endpoint_and_lists_its_models() {
    let server = openai_server(&["qwen", "smol"], &["hi"]);
    let ws = Workspace::new("");
    let out = run(
        &ws,
        &[
            "config",
            "--check",
            "--base-url",
            &server.url("/v1"),
            "-m",
            "smol",
        ],
        &[],
    );
    let text = ok(&out);
    assert!(text.contains("answers"), "{text}");
    assert!(text.contains("# models: qwen, smol"), "{text}");
    assert!(text.contains("# model \"smol\": listed"), "{text}");

    let closed = format!("http://127.0.0.1:{}/v1", closed_port());
    let out = run(&ws, &["config", "--check", "--base-url", &closed], &[]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("connection refused"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn the_workspace_is_found_upwards_like_cargo_finds_its_manifest() {
    let ws = Workspace::new("[retrieve]\ntop_k = 2\n");
    let deep = ws.corpus().join("notes/deep");
    std::fs::create_dir_all(&deep).unwrap();
    let root = ws.path().canonicalize().unwrap();

    let out = ragmap(&deep, &["config"], &[], "");
    let text = ok(&out);
    assert!(
        text.contains(&format!(
            "# workspace: {} (the nearest folder upwards",
            root.display()
        )),
        "{text}"
    );
    assert!(text.contains("top_k = 2  # config.toml"), "{text}");

    // RAGMAP_HOME, then -C, come before the search.
    let other = tempfile::tempdir().unwrap();
    let other_root = other.path().canonicalize().unwrap();
    let home = other_root.display().to_string();
    let out = ragmap(&deep, &["config"], &[("RAGMAP_HOME", &home)], "");
    assert!(
        ok(&out).contains(&format!("# workspace: {home} (from RAGMAP_HOME)")),
        "{}",
        stdout(&out)
    );
    let flag = root.display().to_string();
    let out = ragmap(
        &deep,
        &["-C", &flag, "config"],
        &[("RAGMAP_HOME", &home)],
        "",
    );
    assert!(
        ok(&out).contains(&format!("# workspace: {flag} (from -C)")),
        "{}",
        stdout(&out)
    );
    // Nothing marks one: the current folder, and the defaults.
    let out = ragmap(&other_root, &["config"], &[], "");
    let text = ok(&out);
    assert!(text.contains("(the current folder"), "{text}");
    assert!(text.contains("# config.toml: absent"), "{text}");
}

// ---------------------------------------------------------------- completions, man page

#[test]
fn completions_and_man_pages_come_from_the_command_definition() {
    let ws = Workspace::new("");
    for (shell, marker) in [
        ("bash", "_ragmap()"),
        ("zsh", "#compdef ragmap"),
        ("fish", "complete -c ragmap"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = run(&ws, &["completions", shell], &[]);
        let text = ok(&out);
        assert!(text.contains(marker), "{shell}: {text}");
        // Fish names long options without their dashes (`-l base-url`).
        assert!(
            text.contains("models") && text.contains("base-url"),
            "{shell}: {text}"
        );
    }
    let out = run(&ws, &["man"], &[]);
    let page = ok(&out);
    assert!(page.contains(".TH ragmap"), "{page}");
    assert!(
        page.contains("completions") && page.contains("RAGMAP_HOME"),
        "{page}"
    );

    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("man1");
    let out = run(&ws, &["man", "--dir", target.to_str().unwrap()], &[]);
    ok(&out);
    for page in [
        "ragmap.1",
        "ragmap-ask.1",
        "ragmap-models.1",
        "ragmap-config.1",
    ] {
        assert!(target.join(page).is_file(), "{page} not written");
    }
    let ask = std::fs::read_to_string(target.join("ragmap-ask.1")).unwrap();
    assert!(
        ask.contains("\\-\\-model") || ask.contains("--model"),
        "{ask}"
    );
}

// ---------------------------------------------------------------- answering

fn notes(ws: &Workspace) {
    ws.write_doc(
        "rag.md",
        "---\ntitle: RAG basics\nurl: \"https://example.com/rag\"\n---\n# Retrieval-augmented generation\n\nRetrieval-augmented generation (RAG) retrieves relevant passages from a knowledge base and passes them to the language model as context, which reduces hallucination.\n",
    );
    ws.write_doc(
        "lora.md",
        "---\ntitle: LoRA 微调\nurl: \"https://example.com/lora\"\n---\n# LoRA\n\nLoRA freezes the pretrained weights and trains small low-rank adapter matrices, which cuts the memory needed to fine-tune.\n",
    );
}

fn indexed(config: &str) -> Workspace {
    let ws = Workspace::new(config);
    notes(&ws);
    ok(&run(&ws, &["index"], &[]));
    ws
}

#[test]
fn ask_takes_bare_words_and_standard_input() {
    if !model_available() {
        return;
    }
    let ws = indexed("");
    let question = |out: &Output| {
        let v: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
        v["question"].as_str().unwrap().to_string()
    };
    let out = run(
        &ws,
        &["ask", "what", "is", "LoRA?", "--dry-run", "--json"],
        &[],
    );
    assert_eq!(question(&out), "what is LoRA?");
    let dir = ws.path().display().to_string();
    let out = ragmap(
        ws.path(),
        &["-C", &dir, "ask", "-", "--dry-run", "--json"],
        &[],
        "How does RAG reduce hallucination?\n",
    );
    assert_eq!(question(&out), "How does RAG reduce hallucination?");
    let out = ragmap(
        ws.path(),
        &["-C", &dir, "search", "-", "--json"],
        &[],
        "LoRA adapters",
    );
    let hits: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(hits[0]["path"], "lora.md");
    // No words at all is a usage error.
    let out = run(&ws, &["ask"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn quiet_prints_the_answer_alone_and_verbose_the_steps() {
    if !model_available() {
        return;
    }
    let ws = indexed("");
    let server = openai_server(&["m"], &["RAG retrieves ", "passages [1]."]);
    let base = server.url("/v1");
    let ask = ["ask", "What is RAG?", "--no-rewrite", "--base-url", &base];

    let out = run(&ws, &[&["-q"][..], &ask].concat(), &[]);
    assert_eq!(ok(&out), "RAG retrieves passages [1].\n");
    assert_eq!(stderr(&out), "");

    let out = run(&ws, &ask, &[]);
    let text = ok(&out);
    assert!(
        text.contains("Sources:\n[1] RAG basics — https://example.com/rag"),
        "{text}"
    );
    assert_eq!(stderr(&out), "");

    let out = run(&ws, &[&["-v"][..], &ask].concat(), &[]);
    ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains("ragmap: ") && err.contains("retrieved"),
        "{err}"
    );
    assert!(err.contains("first token at"), "{err}");
}

#[test]
fn an_unknown_model_error_lists_the_models_the_server_has() {
    if !model_available() {
        return;
    }
    let ws = indexed("");
    let openai = ScriptedServer::start(|req| match req.path.as_str() {
        "/v1/models" => openai_models(&["qwen2.5-7b-instruct", "smollm2"]),
        _ => openai_error(404, "The model `nope` does not exist"),
    });
    let out = run(
        &ws,
        &[
            "ask",
            "What is RAG?",
            "--no-rewrite",
            "-m",
            "nope",
            "--base-url",
            &openai.url("/v1"),
        ],
        &[],
    );
    assert_clean_failure(&out, 6, "qwen2.5-7b-instruct, smollm2");

    let ollama = ScriptedServer::start(|req| match req.path.as_str() {
        "/api/tags" => ollama_tags(&["qwen2.5:7b", "llama3.2:1b"]),
        _ => Reply::json(
            404,
            r#"{"error":"model \"nope\" not found, try pulling it first"}"#,
        ),
    });
    let host = format!("127.0.0.1:{}", ollama.port());
    let out = run(
        &ws,
        &[
            "ask",
            "What is RAG?",
            "--no-rewrite",
            "--provider",
            "ollama",
            "--model",
            "nope",
        ],
        &[("OLLAMA_HOST", &host)],
    );
    assert_clean_failure(&out, 6, "qwen2.5:7b, llama3.2:1b");
    assert!(
        stderr(&out).contains("try pulling it first"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn two_passages_of_one_section_share_a_source_line() {
    if !model_available() {
        return;
    }
    let ws = Workspace::new("[chunk]\nmax_tokens = 60\noverlap_tokens = 0\n");
    // Two chunks of one section with little vocabulary in common, so that
    // neither is dropped as a near-duplicate of the other.
    let first = "Passages are ranked by cosine similarity between the question embedding and each chunk embedding, computed by a small multilingual encoder running on the CPU.";
    let second = "Lexical scoring with BM25 rewards rare exact terms such as model names; reciprocal rank fusion then merges both orderings into one list for the prompt.";
    ws.write_doc(
        "long.md",
        &format!(
            "---\ntitle: Long RAG page\nurl: \"https://example.com/long\"\n---\n# Retrieval\n\n{first}\n\n{second}\n"
        ),
    );
    ok(&run(&ws, &["index"], &[]));
    let server = openai_server(&["m"], &["Passages are ranked [1][2]."]);
    let out = run(
        &ws,
        &[
            "ask",
            "How are passages ranked?",
            "--no-rewrite",
            "-k",
            "2",
            "--base-url",
            &server.url("/v1"),
        ],
        &[],
    );
    let text = ok(&out);
    assert!(
        text.contains("Sources:\n[1, 2] Long RAG page — https://example.com/long\n    Retrieval"),
        "{text}"
    );
}

// ---------------------------------------------------------------- front matter

#[test]
fn notes_with_other_tools_front_matter_are_indexed() {
    if !model_available() {
        return;
    }
    let ws = Workspace::new("");
    ws.write_doc(
        "obsidian.md",
        "---\ntitle: Obsidian note on GraphRAG\ntags:\n  - rag\n  - graph\naliases: [graphrag]\ncreated: 2024-05-01\n---\n# GraphRAG\n\nGraphRAG builds a knowledge graph of entities from the corpus and summarises its communities.\n",
    );
    ws.write_doc(
        "hugo.md",
        "+++\ntitle = \"Hugo page on reranking\"\ntags = [\"rerank\"]\n+++\n# Reranking\n\nA cross-encoder reranker scores each retrieved passage against the question.\n",
    );
    ws.write_doc(
        "colon.md",
        "---\ntitle: Notes: chunking, part 2\n---\n# Chunking\n\nChunk sizes between two and five hundred tokens keep passages focused.\n",
    );
    ws.write_doc(
        "broken.md",
        "---\ntitle: \"never closed quote\nno colon line\n---\n# Broken header\n\nThe body of a note with a broken header about vector databases still counts.\n",
    );
    let out = run(&ws, &["index"], &[]);
    ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains("warning: corpus/broken.md:")
            && err.contains("indexed without its front matter"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        stdout(&out).contains("indexed 4 documents"),
        "{}",
        stdout(&out)
    );

    let titles = |query: &str| {
        let out = run(&ws, &["search", query, "-k", "1", "--json"], &[]);
        let hits: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
        hits[0]["title"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(
        titles("GraphRAG knowledge graph communities"),
        "Obsidian note on GraphRAG"
    );
    assert_eq!(titles("cross-encoder reranker"), "Hugo page on reranking");
    assert_eq!(titles("chunk sizes tokens"), "Notes: chunking, part 2");
    assert_eq!(titles("vector databases broken header"), "Broken header");
}
