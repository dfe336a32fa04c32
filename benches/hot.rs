//! Criterion benches of hot functions: `cargo bench --bench hot`.
//! The chunking bench needs the tokenizer from `scripts/setup` and is skipped without it.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use ragmap::chunk::Chunker;
use ragmap::config::{Config, RetrieveMode};
use ragmap::index::{terms, ChunkRow};
use ragmap::prompt::{self, Budget};
use ragmap::retrieve::{self, Hit, RankedList};

const ZH: &str = "检索增强生成（RAG）把外部知识库中检索到的段落交给大语言模型，让它在回答问题时引用可靠的来源。与微调相比，RAG 不需要重新训练模型，知识更新只需要重建索引。常见的工程问题包括文档切分、向量召回、混合检索与重排序。";
const EN: &str = "Retrieval-augmented generation hands passages retrieved from an external knowledge base to a large language model, so that its answers cite reliable sources. Unlike fine-tuning, RAG needs no retraining: updating knowledge only means rebuilding the index. Typical engineering problems are chunking, vector recall, hybrid retrieval and reranking with max_tokens=320.";

fn mixed_paragraph() -> String {
    format!("{ZH}\n\n{EN}\n\n{ZH}{EN}")
}

/// A long markdown document: nested headings, prose in both languages, lists and code.
fn long_markdown(sections: usize) -> String {
    let mut doc = String::from("# 大模型应用开发路线 Roadmap\n\n");
    for i in 0..sections {
        doc.push_str(&format!("## 第 {i} 部分 Part {i}\n\n{ZH}\n\n{EN}\n\n"));
        doc.push_str(&format!(
            "### Details {i}\n\n- {EN}\n- {ZH}\n\n```python\nfor i in range({i}):\n    print(i)\n```\n\n"
        ));
    }
    doc
}

fn row(id: i64, doc_id: i64, text: String) -> ChunkRow {
    ChunkRow {
        id,
        doc_id,
        ordinal: id,
        start: 0,
        end: text.len() as i64,
        heading: "Part › Details".into(),
        text,
        title: format!("Document {doc_id}"),
        source: format!("https://example.com/{doc_id}"),
        path: format!("doc-{doc_id}.md"),
    }
}

/// `n` passages of ~800 bytes, each a different pseudo-random draw from the
/// words of both sample paragraphs, so deduplication compares them (word
/// Jaccard about 0.5-0.6, below the 0.92 threshold) without dropping them.
fn passages(n: usize) -> Vec<String> {
    let text = format!("{ZH} {EN}");
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || "，。（）：".contains(c))
        .filter(|w| !w.is_empty())
        .collect();
    let mut state = 0x2545_f491_u64;
    (0..n)
        .map(|_| {
            let mut p = String::new();
            while p.len() < 800 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                p.push_str(words[(state >> 33) as usize % words.len()]);
                p.push(' ');
            }
            p
        })
        .collect()
}

fn candidates(n: usize) -> Vec<Hit> {
    passages(n)
        .into_iter()
        .zip(0i64..)
        .map(|(text, id)| Hit {
            chunk: row(id, id % 13, text),
            score: 1.0 / (id as f32 + 1.0),
            similarity: Some(0.8),
            vector_rank: Some(id as usize + 1),
            lexical_rank: None,
        })
        .collect()
}

fn bench_terms(c: &mut Criterion) {
    let text = mixed_paragraph();
    let mut g = c.benchmark_group("terms");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("terms_mixed_zh_en", |b| {
        b.iter(|| terms::terms(black_box(&text)))
    });
    g.bench_function("query_terms", |b| {
        b.iter(|| {
            terms::query_terms(black_box(
                "RAG 和微调有什么区别？How is retrieval different?",
            ))
        })
    });
    g.finish();
}

fn bench_retrieve(c: &mut Criterion) {
    let settings = Config::default().retrieve;
    // Two query forms x two retrievers x 40 candidates, overlapping ids.
    let lists: Vec<RankedList> = (0..4)
        .map(|l| RankedList {
            ids: (0..40)
                .map(|r| ((r * (l + 1) % 97) as i64, 1.0 - r as f32 / 40.0))
                .collect(),
            weight: 1.0,
            vector: l % 2 == 0,
        })
        .collect();
    c.bench_function("retrieve/fuse_4x40", |b| {
        b.iter(|| retrieve::fuse(black_box(&lists), RetrieveMode::Hybrid, settings.rrf_k))
    });
    let hits = candidates(80);
    c.bench_function("retrieve/select_80_to_6", |b| {
        b.iter_batched(
            || hits.clone(),
            |h| {
                retrieve::select(
                    h,
                    settings.top_k,
                    settings.max_chunks_per_doc,
                    settings.dedup_threshold,
                )
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

fn bench_prompt(c: &mut Criterion) {
    let hits = candidates(6);
    let budget = Budget {
        context_tokens: 4096,
        answer_tokens: 512,
    };
    c.bench_function("prompt/build_6_sources", |b| {
        b.iter(|| {
            prompt::build(
                black_box("RAG 和微调有什么区别？"),
                black_box(&hits),
                budget,
            )
        })
    });
}

fn bench_chunking(c: &mut Criterion) {
    let config = Config::default();
    let path = ragmap::embed::tokenizer_path(&config);
    if !path.is_file() {
        eprintln!(
            "chunk bench skipped: no tokenizer at {} (run scripts/setup)",
            path.display()
        );
        return;
    }
    let chunker = Chunker::new(&path, &config.chunk).expect("tokenizer loads");
    let doc = long_markdown(60);
    let mut g = c.benchmark_group("chunk");
    g.throughput(Throughput::Bytes(doc.len() as u64));
    g.sample_size(10);
    g.bench_function("long_markdown", |b| {
        b.iter(|| chunker.chunk(black_box(&doc)))
    });
    g.finish();
}

criterion_group!(
    hot,
    bench_terms,
    bench_retrieve,
    bench_prompt,
    bench_chunking
);
criterion_main!(hot);
