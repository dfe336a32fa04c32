//! Hybrid retrieval against the real model and index: the lexical side finds
//! exact keywords and API names that vectors rank low, fusion keeps both, and
//! results carry no duplicates.

mod common;

use common::*;
use ragmap::config::RetrieveMode;
use ragmap::index::Index;

fn rank_of(ws: &Workspace, query: &str, mode: RetrieveMode, path: &str) -> Option<usize> {
    let config = ws.config();
    let index = Index::open(&config).unwrap();
    let mut embedder = ragmap::embed::Embedder::load(&config).unwrap();
    let settings = ragmap::config::Retrieve {
        mode,
        top_k: 3,
        ..config.retrieve.clone()
    };
    let hits =
        ragmap::retrieve::retrieve(&index, Some(&mut embedder), &[query.to_string()], &settings)
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
    let index = Index::open(&config).unwrap();
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
            &index,
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
