//! The embedding model's tokenizer, loaded in milliseconds instead of a second.
//!
//! `tokenizer.json` (17 MB, 250k Unigram pieces) took the `tokenizers` crate
//! ~1 s and ~210 MiB to load, most of it building a trie with a hash map in
//! every node, and ~0.4 s to free again. Here the same pieces and scores live
//! in flat arrays (a breadth-first trie whose children are sorted byte labels),
//! written once to a cache file beside the other caches and read back with a
//! copy; the normalizer, pre-tokenizer, post-processor, decoder and added
//! tokens are the `tokenizers` crate's own, so only the model's segmentation
//! is ours, and it is the crate's Unigram Viterbi step for step (tests compare
//! the ids over the whole corpus).
//!
//! The cache is keyed and checked by the sha256 of `tokenizer.json` and of its
//! own body: any mismatch, truncation or damage means it is rebuilt from the
//! JSON, never trusted.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokenizers::models::unigram::UnigramTrainer;
use tokenizers::{
    AddedToken, DecoderWrapper, Model, NormalizerWrapper, PaddingParams, PostProcessorWrapper,
    PreTokenizerWrapper, Token, TokenizerBuilder, TokenizerImpl, TruncationParams,
};

/// The `tokenizers` crate's pipeline (normalizer, pre-tokenizer,
/// post-processor, decoder) over a model `M`.
pub type Pipeline<M> =
    TokenizerImpl<M, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>;

/// A tokenizer over [`Pieces`]: the crate's pipeline with our model.
pub type Tokenizer = Pipeline<Pieces>;

/// Bumped whenever the cache layout changes: an older file is then rebuilt.
const CACHE_VERSION: u32 = 1;
const MAGIC: &[u8; 16] = b"ragmap-tokenizer";
const NO_TOKEN: u32 = u32::MAX;
/// sentencepiece's penalty for an unknown character, as the crate's Unigram.
const UNK_PENALTY: f64 = 10.0;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(
        "cannot read tokenizer {path}: {message}; run `bash scripts/setup` to reinstall the model"
    )]
    Read { path: PathBuf, message: String },
    #[error("tokenizer {path} is not usable: {message}; run `bash scripts/setup` to reinstall the model")]
    Invalid { path: PathBuf, message: String },
}

/// The Unigram model: pieces, scores and the trie over them, shared by every
/// tokenizer configured from it (cloning is a reference count).
#[derive(Clone)]
pub struct Pieces {
    inner: Arc<Vocab>,
}

struct Vocab {
    /// Every piece's bytes, by id: piece `i` is `text[offsets[i]..offsets[i + 1]]`.
    text: Vec<u8>,
    offsets: Vec<u32>,
    scores: Vec<f64>,
    unk_id: Option<u32>,
    min_score: f64,
    trie: Trie,
}

/// Breadth-first trie over the pieces' bytes; node 0 is the root and the
/// children of a node are contiguous, sorted by label.
#[derive(Default)]
struct Trie {
    labels: Vec<u8>,
    first_child: Vec<u32>,
    child_count: Vec<u16>,
    /// The id of the piece ending at this node, or [`NO_TOKEN`].
    token: Vec<u32>,
}

impl Trie {
    /// Builds the trie; a piece listed twice resolves to its last id, as the
    /// crate's token-to-id map does.
    fn build(vocab: &Vocab) -> Trie {
        let piece = |id: u32| vocab.piece(id).unwrap_or_default();
        let mut order: Vec<u32> = (0..vocab.len() as u32).collect();
        order.sort_by(|&a, &b| piece(a).cmp(piece(b)).then(a.cmp(&b)));
        order.dedup_by(|later, earlier| {
            let same = piece(*later) == piece(*earlier);
            if same {
                *earlier = *later;
            }
            same
        });
        let mut trie = Trie::default();
        let mut queue = std::collections::VecDeque::new();
        trie.push_node(0);
        queue.push_back((0usize, order.len(), 0usize));
        let mut node = 0usize;
        while let Some((lo, hi, depth)) = queue.pop_front() {
            let mut i = lo;
            // Sorted, so the piece that is exactly this prefix comes first.
            if i < hi && piece(order[i]).len() == depth {
                trie.token[node] = order[i];
                i += 1;
            }
            trie.first_child[node] = trie.labels.len() as u32;
            let mut count = 0u16;
            while i < hi {
                let label = piece(order[i])[depth];
                let mut j = i;
                while j < hi && piece(order[j])[depth] == label {
                    j += 1;
                }
                trie.push_node(label);
                queue.push_back((i, j, depth + 1));
                count += 1;
                i = j;
            }
            trie.child_count[node] = count;
            node += 1;
        }
        trie
    }

    fn push_node(&mut self, label: u8) {
        self.labels.push(label);
        self.first_child.push(0);
        self.child_count.push(0);
        self.token.push(NO_TOKEN);
    }

    fn child(&self, node: usize, label: u8) -> Option<usize> {
        let first = *self.first_child.get(node)? as usize;
        let count = *self.child_count.get(node)? as usize;
        let labels = self.labels.get(first..first + count)?;
        labels.binary_search(&label).ok().map(|k| first + k)
    }

    /// The node spelling `bytes`, if any.
    fn walk(&self, bytes: &[u8]) -> Option<usize> {
        bytes.iter().try_fold(0, |node, &b| self.child(node, b))
    }

    /// Checks every index, so that walking a trie read from disk stays in
    /// bounds and always moves forward.
    fn check(&self, pieces: usize) -> Result<(), String> {
        let n = self.labels.len();
        if n == 0
            || [
                self.first_child.len(),
                self.child_count.len(),
                self.token.len(),
            ] != [n; 3]
        {
            return Err("trie arrays disagree".into());
        }
        for node in 0..n {
            let first = self.first_child[node] as usize;
            let count = self.child_count[node] as usize;
            if count > 0 && (first <= node || first + count > n) {
                return Err(format!("trie node {node} points outside the trie"));
            }
            let token = self.token[node];
            if token != NO_TOKEN && token as usize >= pieces {
                return Err(format!("trie node {node} names piece {token}"));
            }
        }
        Ok(())
    }
}

impl Vocab {
    fn from_pieces(pieces: Vec<(String, f64)>, unk_id: Option<usize>) -> Result<Vocab, String> {
        if let Some(unk) = unk_id {
            if unk >= pieces.len() {
                return Err(format!(
                    "unk_id {unk} is outside the vocabulary of {}",
                    pieces.len()
                ));
            }
        }
        let total: usize = pieces.iter().map(|(p, _)| p.len()).sum();
        if total > u32::MAX as usize || pieces.len() >= NO_TOKEN as usize {
            return Err("vocabulary too large".into());
        }
        let mut text = Vec::with_capacity(total);
        let mut offsets = Vec::with_capacity(pieces.len() + 1);
        let mut scores = Vec::with_capacity(pieces.len());
        offsets.push(0);
        for (piece, score) in &pieces {
            text.extend_from_slice(piece.as_bytes());
            offsets.push(text.len() as u32);
            scores.push(*score);
        }
        let mut vocab = Vocab::new(text, offsets, scores, unk_id.map(|u| u as u32));
        vocab.trie = Trie::build(&vocab);
        Ok(vocab)
    }

    fn new(text: Vec<u8>, offsets: Vec<u32>, scores: Vec<f64>, unk_id: Option<u32>) -> Vocab {
        let min_score = scores.iter().copied().fold(f64::INFINITY, f64::min);
        Vocab {
            text,
            offsets,
            scores,
            unk_id,
            min_score,
            trie: Trie::default(),
        }
    }

    fn len(&self) -> usize {
        self.scores.len()
    }

    fn piece(&self, id: u32) -> Option<&[u8]> {
        let start = *self.offsets.get(id as usize)? as usize;
        let end = *self.offsets.get(id as usize + 1)? as usize;
        self.text.get(start..end)
    }

    /// The crate's `Unigram::encode_optimized`: the best-scoring segmentation,
    /// a character no piece covers scored as unknown, runs of unknown
    /// characters fused into one piece. Returns `(start, end)` byte ranges.
    fn segment(&self, sentence: &str) -> tokenizers::Result<Vec<(usize, usize)>> {
        let best = self.best_pieces(sentence)?;
        let mut ranges = Vec::new();
        let mut unknown_run: Option<(usize, usize)> = None;
        let mut ends_at = sentence.len();
        while ends_at > 0 {
            let node = best[ends_at];
            let start = node
                .starts_at
                .ok_or("the segmentation left a gap (a bug)")?;
            if Some(node.id) == self.unk_id {
                unknown_run = Some((start, unknown_run.map_or(ends_at, |(_, end)| end)));
            } else {
                ranges.extend(unknown_run.take());
                ranges.push((start, ends_at));
            }
            ends_at = start;
        }
        ranges.extend(unknown_run);
        ranges.reverse();
        Ok(ranges)
    }

    /// For each byte offset of `sentence`, the last piece of the best-scoring
    /// segmentation of the text before it (Viterbi over the trie's matches).
    fn best_pieces(&self, sentence: &str) -> tokenizers::Result<Vec<Best>> {
        let bytes = sentence.as_bytes();
        let unk_score = self.min_score - UNK_PENALTY;
        let mut best = vec![Best::NONE; bytes.len() + 1];
        let mut starts_at = 0;
        while starts_at < bytes.len() {
            let score_here = best[starts_at].score;
            let char_len = sentence[starts_at..]
                .chars()
                .next()
                .map_or(1, char::len_utf8);
            let mut has_single_node = false;
            let mut node = 0usize;
            for (k, &b) in bytes[starts_at..].iter().enumerate() {
                let Some(child) = self.trie.child(node, b) else {
                    break;
                };
                node = child;
                let id = self.trie.token[node];
                if id == NO_TOKEN {
                    continue;
                }
                let length = k + 1;
                let score = self.scores[id as usize] + score_here;
                best[starts_at + length].offer(id, score, starts_at);
                has_single_node |= length == char_len;
            }
            let target = &mut best[starts_at + char_len];
            if !has_single_node && target.would_take(unk_score + score_here) {
                let unk = self.unk_id.ok_or("the tokenizer has no unknown-token id")?;
                target.offer(unk, unk_score + score_here, starts_at);
            }
            starts_at += char_len;
        }
        Ok(best)
    }
}

/// The best segmentation found so far of the text before one offset: its
/// last piece, where that piece starts, and the total score.
#[derive(Clone, Copy)]
struct Best {
    id: u32,
    score: f64,
    starts_at: Option<usize>,
}

impl Best {
    const NONE: Best = Best {
        id: 0,
        score: 0.0,
        starts_at: None,
    };

    fn would_take(&self, score: f64) -> bool {
        self.starts_at.is_none() || score > self.score
    }

    /// Takes the piece `id` from `starts_at` when it scores better.
    fn offer(&mut self, id: u32, score: f64, starts_at: usize) {
        if self.would_take(score) {
            *self = Best {
                id,
                score,
                starts_at: Some(starts_at),
            };
        }
    }
}

impl Model for Pieces {
    type Trainer = UnigramTrainer;

    fn tokenize(&self, sentence: &str) -> tokenizers::Result<Vec<Token>> {
        if sentence.is_empty() {
            return Ok(Vec::new());
        }
        let vocab = &self.inner;
        vocab
            .segment(sentence)?
            .into_iter()
            .map(|(start, end)| {
                let value = &sentence[start..end];
                let id = match vocab
                    .trie
                    .walk(value.as_bytes())
                    .map(|n| vocab.trie.token[n])
                {
                    Some(id) if id != NO_TOKEN => id,
                    _ => vocab
                        .unk_id
                        .ok_or("the tokenizer has no unknown-token id")?,
                };
                Ok(Token::new(id, value.to_string(), (start, end)))
            })
            .collect()
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        let trie = &self.inner.trie;
        let id = trie.token[trie.walk(token.as_bytes())?];
        (id != NO_TOKEN).then_some(id)
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        let piece = self.inner.piece(id)?;
        Some(String::from_utf8_lossy(piece).into_owned())
    }

    fn get_vocab(&self) -> HashMap<String, u32> {
        (0..self.inner.len() as u32)
            .filter_map(|id| Some((self.id_to_token(id)?, id)))
            .collect()
    }

    fn get_vocab_size(&self) -> usize {
        self.inner.len()
    }

    fn save(&self, _folder: &Path, _prefix: Option<&str>) -> tokenizers::Result<Vec<PathBuf>> {
        Err("ragmap's tokenizer model is read-only".into())
    }

    fn get_trainer(&self) -> UnigramTrainer {
        UnigramTrainer::default()
    }
}

/// An added token as `tokenizer.json` lists it.
#[derive(Serialize, Deserialize)]
struct AddedTokenWithId {
    id: u32,
    #[serde(flatten)]
    token: AddedToken,
}

/// Everything of `tokenizer.json` but the pieces, in the crate's own types.
#[derive(Serialize, Deserialize)]
struct Parts {
    #[serde(default)]
    truncation: Option<TruncationParams>,
    #[serde(default)]
    padding: Option<PaddingParams>,
    #[serde(default)]
    added_tokens: Vec<AddedTokenWithId>,
    #[serde(default)]
    normalizer: Option<NormalizerWrapper>,
    #[serde(default)]
    pre_tokenizer: Option<PreTokenizerWrapper>,
    #[serde(default)]
    post_processor: Option<PostProcessorWrapper>,
    #[serde(default)]
    decoder: Option<DecoderWrapper>,
    #[serde(default)]
    unk_id: Option<usize>,
}

#[derive(Deserialize)]
struct JsonFile {
    #[serde(flatten)]
    parts: Parts,
    model: JsonModel,
}

#[derive(Deserialize)]
struct JsonModel {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    unk_id: Option<usize>,
    #[serde(default)]
    byte_fallback: bool,
    vocab: Vec<(String, f64)>,
}

/// Loads the tokenizer of `json` (a `tokenizer.json`), from the cache in
/// `[paths] cache`/tokenizers when it matches, else from the JSON (writing
/// the cache for next time).
pub fn load(json: &Path) -> Result<Tokenizer, TokenizerError> {
    load_cached(
        json,
        Some(&crate::config::default_cache_dir().join("tokenizers")),
    )
}

/// [`load`] with the cache in `cache_dir` (none: always from the JSON, no cache written).
pub fn load_cached(json: &Path, cache_dir: Option<&Path>) -> Result<Tokenizer, TokenizerError> {
    let read_error = |e: std::io::Error| TokenizerError::Read {
        path: json.to_path_buf(),
        message: e.to_string(),
    };
    let json_hash = hash_file(json).map_err(read_error)?;
    let cache = cache_dir.map(|dir| dir.join(format!("{}.bin", hex::encode(json_hash))));
    if let Some(Ok((parts, vocab))) = cache.as_deref().map(|c| read_cache(c, &json_hash)) {
        if let Ok(tokenizer) = assemble(parts, vocab) {
            return Ok(tokenizer);
        }
    }
    let bytes = fs::read(json).map_err(read_error)?;
    // Hashed apart from these bytes: the file changed in between.
    if <[u8; 32]>::from(Sha256::digest(&bytes)) != json_hash {
        return Err(TokenizerError::Read {
            path: json.to_path_buf(),
            message: "it changed while being read".into(),
        });
    }
    let invalid = |message: String| TokenizerError::Invalid {
        path: json.to_path_buf(),
        message,
    };
    let file: JsonFile = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    drop(bytes);
    let model = file.model;
    match model.kind.as_deref() {
        Some("Unigram") | None if !model.byte_fallback => {}
        kind => {
            return Err(invalid(format!(
                "its model is {}{}, ragmap reads Unigram models (multilingual-e5)",
                kind.unwrap_or("untyped"),
                if model.byte_fallback {
                    " with byte fallback"
                } else {
                    ""
                }
            )))
        }
    }
    let mut parts = file.parts;
    parts.unk_id = model.unk_id;
    let vocab = Vocab::from_pieces(model.vocab, model.unk_id).map_err(invalid)?;
    if let Some(cache) = &cache {
        // A cache that cannot be written costs the next run a quarter of a second, nothing more.
        let _ = write_cache(cache, &json_hash, &parts, &vocab);
    }
    assemble(parts, vocab).map_err(invalid)
}

/// sha256 of a file, read in pieces: the 17 MB JSON is hashed on every
/// load, and a buffer of its size would cost more page faults than the hash.
pub(crate) fn hash_file(path: &Path) -> std::io::Result<[u8; 32]> {
    use std::io::Read;
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 18];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buf[..n]);
    }
}

/// The crate's own deserialization order: builder parts, then added tokens.
fn assemble(parts: Parts, vocab: Vocab) -> Result<Tokenizer, String> {
    let mut tokenizer: Tokenizer = TokenizerBuilder::new()
        .with_model(Pieces {
            inner: Arc::new(vocab),
        })
        .with_normalizer(parts.normalizer)
        .with_pre_tokenizer(parts.pre_tokenizer)
        .with_post_processor(parts.post_processor)
        .with_decoder(parts.decoder)
        .with_truncation(parts.truncation)
        .with_padding(parts.padding)
        .build()
        .map_err(|e| e.to_string())?;
    tokenizer
        .add_tokens(parts.added_tokens.into_iter().map(|t| t.token))
        .map_err(|e| e.to_string())?;
    Ok(tokenizer)
}

fn write_cache(path: &Path, json_hash: &[u8; 32], parts: &Parts, vocab: &Vocab) -> Option<()> {
    let parts_json = serde_json::to_vec(parts).ok()?;
    let trie = &vocab.trie;
    let mut body = Vec::new();
    let put_u32 = |body: &mut Vec<u8>, v: u32| body.extend_from_slice(&v.to_le_bytes());
    put_u32(&mut body, parts_json.len() as u32);
    body.extend_from_slice(&parts_json);
    put_u32(&mut body, vocab.len() as u32);
    put_u32(&mut body, trie.labels.len() as u32);
    put_u32(&mut body, vocab.text.len() as u32);
    put_u32(&mut body, vocab.unk_id.unwrap_or(NO_TOKEN));
    vocab.offsets.iter().for_each(|&v| put_u32(&mut body, v));
    body.extend_from_slice(&vocab.text);
    for s in &vocab.scores {
        body.extend_from_slice(&s.to_le_bytes());
    }
    body.extend_from_slice(&trie.labels);
    trie.first_child.iter().for_each(|&v| put_u32(&mut body, v));
    for c in &trie.child_count {
        body.extend_from_slice(&c.to_le_bytes());
    }
    trie.token.iter().for_each(|&v| put_u32(&mut body, v));
    let mut file = Vec::with_capacity(body.len() + 96);
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&CACHE_VERSION.to_le_bytes());
    file.extend_from_slice(json_hash);
    file.extend_from_slice(&Sha256::digest(&body));
    file.extend_from_slice(&(body.len() as u64).to_le_bytes());
    file.extend_from_slice(&body);
    let dir = path.parent()?;
    fs::create_dir_all(dir).ok()?;
    // Written aside and renamed: a reader never sees half a file.
    let mut tmp = tempfile::NamedTempFile::new_in(dir).ok()?;
    std::io::Write::write_all(&mut tmp, &file).ok()?;
    tmp.persist(path).ok()?;
    Some(())
}

/// Reads bytes front to back; every read is checked.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.bytes.len() {
            return Err("truncated".into());
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().map_err(|_| "truncated")?,
        ))
    }

    fn array<T, const N: usize>(
        &mut self,
        count: usize,
        from: fn([u8; N]) -> T,
    ) -> Result<Vec<T>, String> {
        let bytes = self.take(count.checked_mul(N).ok_or("too large")?)?;
        Ok(bytes
            .chunks_exact(N)
            .map(|c| from(c.try_into().unwrap_or([0; N])))
            .collect())
    }
}

fn read_cache(path: &Path, json_hash: &[u8; 32]) -> Result<(Parts, Vocab), String> {
    let file = fs::read(path).map_err(|e| e.to_string())?;
    let mut r = Reader { bytes: &file };
    if r.take(MAGIC.len())? != MAGIC || r.u32()? != CACHE_VERSION {
        return Err("not a cache of this version".into());
    }
    if r.take(32)? != json_hash {
        return Err("made from another tokenizer.json".into());
    }
    let body_hash = r.take(32)?;
    let body_len = u64::from_le_bytes(r.take(8)?.try_into().map_err(|_| "truncated")?);
    if body_len != r.bytes.len() as u64 || Sha256::digest(r.bytes).as_slice() != body_hash {
        return Err("damaged".into());
    }
    let parts_len = r.u32()? as usize;
    let parts: Parts = serde_json::from_slice(r.take(parts_len)?).map_err(|e| e.to_string())?;
    let n = r.u32()? as usize;
    let nodes = r.u32()? as usize;
    let text_len = r.u32()? as usize;
    let unk = r.u32()?;
    let offsets = r.array(n + 1, u32::from_le_bytes)?;
    let text = r.take(text_len)?.to_vec();
    let scores = r.array(n, f64::from_le_bytes)?;
    let labels = r.take(nodes)?.to_vec();
    let first_child = r.array(nodes, u32::from_le_bytes)?;
    let child_count = r.array(nodes, u16::from_le_bytes)?;
    let token = r.array(nodes, u32::from_le_bytes)?;
    if !r.bytes.is_empty() {
        return Err("trailing bytes".into());
    }
    if offsets.first() != Some(&0)
        || offsets.last().map(|&o| o as usize) != Some(text.len())
        || offsets.windows(2).any(|w| w[0] > w[1])
    {
        return Err("piece offsets are inconsistent".into());
    }
    let unk_id = (unk != NO_TOKEN).then_some(unk);
    if unk_id.is_some_and(|u| u as usize >= n) || unk_id.map(|u| u as usize) != parts.unk_id {
        return Err("unknown-token id is inconsistent".into());
    }
    let mut vocab = Vocab::new(text, offsets, scores, unk_id);
    vocab.trie = Trie {
        labels,
        first_child,
        child_count,
        token,
    };
    vocab.trie.check(n)?;
    Ok((parts, vocab))
}

/// What the embedding model reads, configured as its files say: padded to
/// the longest input of a batch with the pad token, truncated to
/// `max_length`, and the special tokens of `special_tokens_map.json` added
/// as special tokens (the configuration fastembed used, so ids and vectors
/// are unchanged).
pub fn for_model<M: Model + Clone>(
    base: &Pipeline<M>,
    model_dir: &Path,
    max_length: usize,
) -> Result<Pipeline<M>, TokenizerError> {
    let invalid = |name: &str, message: String| TokenizerError::Invalid {
        path: model_dir.join(name),
        message,
    };
    let config = read_json(model_dir, "config.json")?;
    let tokenizer_config = read_json(model_dir, "tokenizer_config.json")?;
    let model_max = tokenizer_config["model_max_length"]
        .as_f64()
        .ok_or_else(|| {
            invalid(
                "tokenizer_config.json",
                "no numeric model_max_length".into(),
            )
        })?;
    let pad_value = &tokenizer_config["pad_token"];
    let pad_token: String = pad_value
        .as_str()
        .or_else(|| pad_value["content"].as_str())
        .ok_or_else(|| invalid("tokenizer_config.json", "no pad_token".into()))?
        .into();
    let pad_id = config["pad_token_id"]
        .as_u64()
        .map(|id| id as u32)
        .or_else(|| base.token_to_id(&pad_token))
        .unwrap_or(0);
    let mut tokenizer = base.clone();
    tokenizer.with_padding(Some(PaddingParams {
        strategy: tokenizers::PaddingStrategy::BatchLongest,
        pad_token,
        pad_id,
        ..Default::default()
    }));
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_length.min(model_max as usize),
            ..Default::default()
        }))
        .map_err(|e| invalid("tokenizer_config.json", e.to_string()))?;
    for token in special_tokens(&read_json(model_dir, "special_tokens_map.json")?) {
        tokenizer
            .add_special_tokens([token])
            .map_err(|e| invalid("special_tokens_map.json", e.to_string()))?;
    }
    Ok(tokenizer)
}

/// `model_dir/name` parsed as JSON; errors name the file.
fn read_json(model_dir: &Path, name: &str) -> Result<serde_json::Value, TokenizerError> {
    let path = model_dir.join(name);
    let bytes = fs::read(&path).map_err(|e| TokenizerError::Read {
        path: path.clone(),
        message: e.to_string(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| TokenizerError::Invalid {
        path,
        message: e.to_string(),
    })
}

/// The entries of `special_tokens_map.json` as special tokens: a bare
/// string, or an object carrying every flag; other shapes are skipped.
fn special_tokens(map: &serde_json::Value) -> Vec<AddedToken> {
    let Some(entries) = map.as_object() else {
        return Vec::new();
    };
    entries
        .values()
        .filter_map(|value| {
            if let Some(content) = value.as_str() {
                return Some(AddedToken {
                    content: content.into(),
                    special: true,
                    ..Default::default()
                });
            }
            Some(AddedToken {
                content: value["content"].as_str()?.into(),
                special: true,
                single_word: value["single_word"].as_bool()?,
                lstrip: value["lstrip"].as_bool()?,
                rstrip: value["rstrip"].as_bool()?,
                normalized: value["normalized"].as_bool()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Vocab {
        let pieces = [
            ("<unk>", 0.0),
            ("a", -1.0),
            ("ab", -1.5),
            ("b", -2.0),
            ("abc", -4.5),
            ("c", -3.0),
            ("ab", -1.2),
        ];
        Vocab::from_pieces(
            pieces.iter().map(|(p, s)| (p.to_string(), *s)).collect(),
            Some(0),
        )
        .unwrap()
    }

    #[test]
    fn segments_by_best_score_and_fuses_unknown_runs() {
        let vocab = tiny();
        let pieces = Pieces {
            inner: Arc::new(vocab),
        };
        let ids: Vec<u32> = pieces
            .tokenize("abcxyab")
            .unwrap()
            .iter()
            .map(|t| t.id)
            .collect();
        // "ab" (its last id, 6) + "c", then "xy" fused as one unknown, then "ab".
        assert_eq!(ids, vec![6, 5, 0, 6]);
        assert_eq!(pieces.token_to_id("abc"), Some(4));
        assert_eq!(pieces.token_to_id("ab"), Some(6));
        assert_eq!(pieces.token_to_id("zz"), None);
    }

    #[test]
    fn trie_check_rejects_out_of_bounds_nodes() {
        let mut vocab = tiny();
        assert!(vocab.trie.check(vocab.len()).is_ok());
        vocab.trie.first_child[0] = 1000;
        assert!(vocab.trie.check(vocab.len()).is_err());
    }
}
