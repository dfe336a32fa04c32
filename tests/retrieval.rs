//! Hybrid retrieval against the real model and index: the lexical side finds
//! exact keywords and API names that vectors rank low, fusion keeps both, and
//! results carry no duplicates.

mod common;

use common::*;
use ragmap::config::RetrieveMode;

fn rank_of(ws: &Workspace, query: &str, mode: RetrieveMode, path: &str) -> Option<usize> {
    let config = ws.config();
    let index = ragmap::index::open(&config).unwrap();
    let mut embedder = ragmap::embed::Embedder::load(&config).unwrap();
    let settings = ragmap::config::Retrieve {
        mode,
        top_k: 3,
        ..config.retrieve.clone()
    };
    let hits = ragmap::retrieve::retrieve(
        &*index,
        Some(&mut embedder),
        &[query.to_string()],
        &settings,
    )
    .unwrap();
    hits.iter().position(|h| h.chunk.path == path)
}

/// A workspace holding [`corpus`], indexed.
fn indexed_corpus() -> Workspace {
    let ws = Workspace::new("");
    corpus(&ws);
    ws.build_index();
    ws
}

fn corpus(ws: &Workspace) {
    // Documents close in meaning to "robust evaluation" that never use the word 鲁棒性.
    for (i, text) in [
        "评估大模型应用时，要关注回答的稳定性：同一个问题多次提问，答案是否一致，面对改写后的问题是否仍然正确。",
        "RAG 系统的可靠性评估包括检索召回率、答案忠实度和上下文相关性，常用 RAGAS 等工具自动打分。",
        "模型在分布外数据上的表现往往会下降，评测集需要覆盖各种异常输入，才能反映真实的稳定程度。",
        "Evaluating an LLM application means checking that answers stay correct when questions are rephrased or noisy.",
        "对抗样本测试：在输入里加入错别字、无关句子和干扰信息，观察模型输出是否保持正确，是衡量系统抗干扰能力的常用方法。",
        "模型稳健与否，要看它在噪声、扰动和异常输入下能否给出一致的结果；这类测试应当成为上线前的必做项目。",
        "A robust system keeps working under noisy input, perturbations and unexpected queries; test it with adversarial examples.",
    ]
    .iter()
    .enumerate()
    {
        ws.write_doc(&format!("near{i}.md"), &format!("# 评估笔记 {i}\n\n{text}\n"));
    }
    // The only document with the keyword, mostly about something else.
    ws.write_doc(
        "target.md",
        "# 向量数据库选型\n\n选择向量数据库时要比较索引类型（HNSW、IVF、PQ）、元数据过滤能力、写入吞吐、部署与运维成本以及社区活跃度。Milvus 适合大规模集群部署，Qdrant 用 Rust 编写、过滤能力强，Chroma 上手简单、适合原型开发，pgvector 则能直接复用现有的 PostgreSQL。容量规划时还要估算向量维度、副本数和内存占用，并为索引重建预留时间。另外鲁棒性也值得一提。\n",
    );
    // An exact API name buried in a longer page.
    ws.write_doc(
        "api.md",
        "# LangChain 入门\n\nLangChain 把模型、提示词模板和检索器组合成链。加载网页可以用文档加载器，切分长文本时常用 RecursiveCharacterTextSplitter，并设置 chunk_size 与 chunk_overlap 两个参数。\n",
    );
    ws.write_doc(
        "splitters.md",
        "# Text splitting\n\nSplitting documents into chunks before embedding keeps passages focused; chunk size and overlap trade recall against context.\n",
    );
    // Two copies of the same passage under different names: only one may be returned.
    let dup = "# 提示工程\n\n少样本提示（few-shot prompting）在提示词里给出几个示例，让模型模仿示例的格式和推理方式作答。\n";
    ws.write_doc("dup_a.md", dup);
    ws.write_doc("dup_b.md", dup);
}

#[test]
fn lexical_side_rescues_keywords_and_api_names() {
    if !model_available() {
        return;
    }
    let ws = indexed_corpus();

    let query = "鲁棒性";
    let vector = rank_of(&ws, query, RetrieveMode::Vector, "target.md");
    let hybrid = rank_of(&ws, query, RetrieveMode::Hybrid, "target.md");
    assert_eq!(
        rank_of(&ws, query, RetrieveMode::Lexical, "target.md"),
        Some(0)
    );
    assert!(
        vector.is_none(),
        "vectors alone should miss the keyword in the top 3 (got {vector:?})"
    );
    assert!(
        hybrid.is_some(),
        "hybrid must keep the lexical hit in the top 3"
    );

    let api = "RecursiveCharacterTextSplitter";
    assert_eq!(rank_of(&ws, api, RetrieveMode::Lexical, "api.md"), Some(0));
    assert!(rank_of(&ws, api, RetrieveMode::Hybrid, "api.md").is_some());
}

#[test]
fn results_carry_no_duplicates() {
    if !model_available() {
        return;
    }
    let ws = indexed_corpus();
    let config = ws.config();
    let index = ragmap::index::open(&config).unwrap();
    let mut embedder = ragmap::embed::Embedder::load(&config).unwrap();
    for mode in [
        RetrieveMode::Hybrid,
        RetrieveMode::Vector,
        RetrieveMode::Lexical,
    ] {
        let settings = ragmap::config::Retrieve {
            mode,
            top_k: 6,
            ..config.retrieve.clone()
        };
        let hits = ragmap::retrieve::retrieve(
            &*index,
            Some(&mut embedder),
            &[
                "少样本提示 few-shot 示例".to_string(),
                "few-shot prompting examples".to_string(),
            ],
            &settings,
        )
        .unwrap();
        let dups = hits
            .iter()
            .filter(|h| h.chunk.path.starts_with("dup_"))
            .count();
        assert_eq!(
            dups,
            1,
            "{mode:?}: {:?}",
            hits.iter().map(|h| &h.chunk.path).collect::<Vec<_>>()
        );
        let mut ids: Vec<i64> = hits.iter().map(|h| h.chunk.id).collect();
        ids.dedup();
        assert_eq!(ids.len(), hits.len());
    }
}

/// English pages among Chinese ones that share their topic words, for
/// questions asked in Chinese (and the reverse).
fn bilingual_corpus(ws: &Workspace) {
    ws.write_doc(
        "quant.md",
        "---\ntitle: \"GPTQ: post-training quantization\"\nurl: \"https://github.com/IST-DASLab/gptq\"\n---\n# GPTQ\n\nGPTQ compresses the weights of large language models to 3 or 4 bits after training, so that a 175B model fits on a single GPU.\n",
    );
    ws.write_doc(
        "serving.md",
        "---\ntitle: \"vllm-project/vllm\"\nurl: \"https://github.com/vllm-project/vllm\"\n---\n# vLLM\n\nA library for high-throughput serving of language models; the key-value memory of attention is managed in pages.\n",
    );
    for (i, text) in [
        "显存不够时可以减小批大小，或者把部分参数放到内存里。训练需要的显存和模型参数量大致成正比。",
        "部署大模型服务时要考虑吞吐量、延迟和并发请求，高效管理缓存能明显提升服务能力。",
        "注意力机制让模型在生成每个词时关注输入中相关的部分，是 Transformer 的核心。",
        "模型训练完成后，还需要在评测集上检查效果，再决定是否上线。",
    ]
    .iter()
    .enumerate()
    {
        ws.write_doc(&format!("zh{i}.md"), &format!("# 笔记 {i}\n\n{text}\n"));
    }
    ws.write_doc(
        "zh-quant.md",
        "# 模型量化\n\n量化把模型权重从 16 位浮点数压缩到 4 位整数，显存占用随之下降，推理时精度损失很小。\n",
    );
}

#[test]
fn glossary_and_names_bridge_the_two_languages() {
    if !model_available() {
        return;
    }
    let ws = Workspace::new("");
    bilingual_corpus(&ws);
    ws.build_index();
    let config = ws.config();
    let index = ragmap::index::open(&config).unwrap();
    let mut embedder = ragmap::embed::Embedder::load(&config).unwrap();
    let mut rank = |query: &str, settings: ragmap::config::Retrieve, path: &str| {
        let settings = ragmap::config::Retrieve {
            top_k: 10,
            max_chunks_per_doc: 1,
            ..settings
        };
        let hits = ragmap::retrieve::retrieve(
            &*index,
            Some(&mut embedder),
            &[query.to_string()],
            &settings,
        )
        .unwrap();
        hits.iter().position(|h| h.chunk.path == path)
    };
    let on = config.retrieve.clone();
    let off = ragmap::config::Retrieve {
        expansion_weight: 0.0,
        name_weight: 0.0,
        ..on.clone()
    };
    let lexical = |s: &ragmap::config::Retrieve| ragmap::config::Retrieve {
        mode: RetrieveMode::Lexical,
        ..s.clone()
    };
    let cases = [
        // 训练后量化 → post-training quantization, in the English page's
        // title: BM25 alone, since in a corpus this small every page is near
        // enough to every question for the vectors to rank them all.
        (
            "训练后量化能把模型压缩到几比特？",
            "quant.md",
            0,
            lexical(&on),
            lexical(&off),
        ),
        // A Latin name in a Chinese question: the page it names.
        (
            "vLLM 怎样高效管理注意力的缓存？",
            "serving.md",
            0,
            on.clone(),
            off.clone(),
        ),
        // An English question and the Chinese page (after the English one,
        // which answers it too).
        (
            "How much GPU memory does model quantization save?",
            "zh-quant.md",
            1,
            lexical(&on),
            lexical(&off),
        ),
    ];
    let mut failures = Vec::new();
    for (q, path, at_most, with_bridges, without_bridges) in cases {
        let with = rank(q, with_bridges, path);
        let without = rank(q, without_bridges, path);
        eprintln!("{q}: {with:?} with the bridges, {without:?} without");
        let better = without.is_none_or(|w| with.is_some_and(|r| r < w));
        if !(with.is_some_and(|r| r <= at_most) && better) {
            failures.push(format!(
                "{q}: {with:?} with, {without:?} without the bridges"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn a_bad_user_glossary_is_an_error_naming_its_line() {
    let ws = Workspace::new("[retrieve]\nglossary = \"terms.txt\"\nmode = \"lexical\"\n");
    ws.write_doc("a.md", "# A\n\ntext\n");
    std::fs::write(
        ws.path().join("terms.txt"),
        "# mine\n炼丹 | model alchemy\n调参侠\n",
    )
    .unwrap();
    let out = ws.run(&["search", "什么是微调"]);
    assert_clean_failure(&out, 1, "terms.txt line 3");
}
