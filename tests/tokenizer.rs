//! ragmap's tokenizer (flat-array Unigram, cached) gives the ids of the
//! `tokenizers` crate's own loading of `tokenizer.json`, over the text of
//! every page of the web mirror, both as the chunker uses it and configured
//! for the model; a damaged or foreign cache is never trusted.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use ragmap::config::Config;
use ragmap::tokenizer::{self, Tokenizer};

fn model_dir() -> Option<PathBuf> {
    model_available().then(|| Config::default().model_dir())
}

/// Every page of the mirror as text (HTML included: markup, scripts and
/// entities are good test input too), cut into paragraphs and windows.
fn corpus_texts() -> Option<Vec<String>> {
    let root = webcorpus()?;
    let mut texts = Vec::new();
    for entry in walkdir::WalkDir::new(&root).sort_by_file_name() {
        let entry = entry.unwrap();
        if !entry.file_type().is_file() {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(entry.path()).unwrap()).into_owned();
        texts.extend(
            text.split("\n\n")
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string),
        );
        let chars: Vec<char> = text.chars().collect();
        texts.extend(chars.chunks(3000).map(|w| w.iter().collect::<String>()));
    }
    texts.extend(
        [
            "",
            " ",
            "\t\n",
            "<s> </s> <pad> <unk> <mask>",
            "a <mask> b",
            "query: RAG 和微调有什么区别",
            "𠀀𠀁𪚥 \u{0}\u{7}\u{200b}\u{feff} 🦀🧠 ﷽",
            "ＡＢＣ１２３ ｶﾀｶﾅ",
        ]
        .map(str::to_string),
    );
    assert!(texts.len() > 1000, "only {} texts", texts.len());
    Some(texts)
}

fn ids(tokenizer: &Tokenizer, text: &str, special: bool) -> (Vec<u32>, Vec<(usize, usize)>) {
    let e = tokenizer.encode_fast(text, special).unwrap();
    (e.get_ids().to_vec(), e.get_offsets().to_vec())
}

fn reference_ids(
    tokenizer: &tokenizers::Tokenizer,
    text: &str,
    special: bool,
) -> (Vec<u32>, Vec<(usize, usize)>) {
    let e = tokenizer.encode_fast(text, special).unwrap();
    (e.get_ids().to_vec(), e.get_offsets().to_vec())
}

#[test]
fn same_ids_as_the_tokenizers_crate_over_the_corpus() {
    let (Some(dir), Some(texts)) = (model_dir(), corpus_texts()) else {
        return;
    };
    let json = dir.join("tokenizer.json");
    let reference = tokenizers::Tokenizer::from_file(&json).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let built = tokenizer::load_cached(&json, Some(cache.path())).unwrap();
    assert_eq!(
        std::fs::read_dir(cache.path()).unwrap().count(),
        1,
        "the first load writes the cache"
    );
    let cached = tokenizer::load_cached(&json, Some(cache.path())).unwrap();
    for text in &texts {
        for special in [false, true] {
            let want = reference_ids(&reference, text, special);
            assert_eq!(ids(&built, text, special), want, "from JSON: {text:?}");
            assert_eq!(
                ids(&cached, text, special),
                want,
                "from the cache: {text:?}"
            );
        }
    }
    assert_eq!(cached.get_vocab_size(true), reference.get_vocab_size(true));
    for id in [0, 3, 5, 1000, 250_000, 250_001] {
        assert_eq!(cached.id_to_token(id), reference.id_to_token(id));
    }
}

#[test]
fn configured_for_the_model_pads_and_truncates_like_the_crate() {
    let (Some(dir), Some(texts)) = (model_dir(), corpus_texts()) else {
        return;
    };
    let json = dir.join("tokenizer.json");
    let reference = tokenizers::Tokenizer::from_file(&json).unwrap();
    let reference = tokenizer::for_model(&*reference, &dir, 512).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let ours = tokenizer::load_cached(&json, Some(cache.path())).unwrap();
    let ours = tokenizer::for_model(&ours, &dir, 512).unwrap();
    for batch in texts.chunks(8) {
        let batch: Vec<String> = batch.iter().map(|t| format!("passage: {t}")).collect();
        let want = reference.encode_batch(batch.clone(), true).unwrap();
        let got = ours.encode_batch(batch, true).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!(g.len() <= 512);
            assert_eq!(g.get_ids(), w.get_ids());
            assert_eq!(g.get_attention_mask(), w.get_attention_mask());
            assert_eq!(g.get_type_ids(), w.get_type_ids());
        }
    }
}

/// The single cache file in `dir`.
fn cache_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

#[test]
fn a_damaged_or_foreign_cache_is_rebuilt_from_the_json() {
    let Some(dir) = model_dir() else {
        return;
    };
    let json = dir.join("tokenizer.json");
    let reference = tokenizers::Tokenizer::from_file(&json).unwrap();
    let text = "检索增强生成 (RAG) combines retrieval with generation. 微调 changes the weights.";
    let want = reference_ids(&reference, text, true);
    let cache = tempfile::tempdir().unwrap();
    tokenizer::load_cached(&json, Some(cache.path())).unwrap();
    let file = cache_file(cache.path());
    let good = std::fs::read(&file).unwrap();
    let mut damaged: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("header only", good[..90].to_vec()),
        ("garbage", vec![0xAB; good.len()]),
    ];
    for at in [20, 60, 100, good.len() / 3, good.len() - 1] {
        let mut flipped = good.clone();
        flipped[at] ^= 0x40;
        damaged.push(("one byte flipped", flipped));
    }
    for (what, bytes) in damaged {
        std::fs::write(&file, &bytes).unwrap();
        let loaded = tokenizer::load_cached(&json, Some(cache.path())).unwrap();
        assert_eq!(ids(&loaded, text, true), want, "{what}");
        assert_eq!(
            std::fs::read(&file).unwrap(),
            good,
            "{what}: the cache is rewritten"
        );
    }

    // Another tokenizer.json (here: the same one with a trailing newline)
    // has another hash, so it never reads this cache.
    let other_dir = tempfile::tempdir().unwrap();
    let other = other_dir.path().join("tokenizer.json");
    let mut bytes = std::fs::read(&json).unwrap();
    bytes.push(b'\n');
    std::fs::write(&other, &bytes).unwrap();
    let loaded = tokenizer::load_cached(&other, Some(cache.path())).unwrap();
    assert_eq!(ids(&loaded, text, true), want);
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 2);

    // An unwritable cache directory only means no cache.
    let missing = cache.path().join("file-not-dir");
    std::fs::write(&missing, b"x").unwrap();
    let loaded = tokenizer::load_cached(&json, Some(&missing.join("sub"))).unwrap();
    assert_eq!(ids(&loaded, text, true), want);
}

#[test]
fn a_damaged_tokenizer_json_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("tokenizer.json");
    for bytes in [
        &b""[..],
        b"{",
        b"{\"model\": {\"type\": \"BPE\", \"vocab\": []}}",
        b"{\"model\": {\"type\": \"Unigram\", \"unk_id\": 7, \"vocab\": [[\"a\", -1.0]]}}",
        b"\xff\xfe",
    ] {
        std::fs::write(&json, bytes).unwrap();
        let err = tokenizer::load_cached(&json, Some(dir.path()))
            .err()
            .expect("a damaged tokenizer.json is refused");
        let message = err.to_string();
        assert!(
            message.contains("tokenizer.json") && message.contains("scripts/setup"),
            "{message}"
        );
    }
    let err = tokenizer::load_cached(&dir.path().join("absent.json"), None)
        .err()
        .unwrap();
    assert!(err.to_string().contains("absent.json"), "{err}");
}
