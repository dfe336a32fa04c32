//! Markdown-aware chunking sized in the embedding model's own tokens.
//!
//! Each chunk keeps its byte range in the document body and the path of
//! headings above it, so results can say where they come from and the
//! embedded text carries its context.

use std::path::Path;
use std::sync::Arc;

use pulldown_cmark::{Event, Parser, Tag, TagEnd};
use text_splitter::{ChunkConfig, ChunkSizer, MarkdownSplitter};

use crate::config;
use crate::corpus::PATH_SEPARATOR;
use crate::tokenizer::{self, Tokenizer};

/// Bumped whenever chunk boundaries or embedded text change for the same settings,
/// so existing indexes are rebuilt rather than silently mixed.
pub const CHUNKER_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("cannot load tokenizer {path}: {message}; run scripts/setup")]
    Tokenizer { path: String, message: String },
    #[error("invalid [chunk] settings in config.toml: {0}")]
    Settings(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Position of the chunk in its document, from 0.
    pub ordinal: usize,
    /// Byte range in the document body (front matter excluded).
    pub start: usize,
    pub end: usize,
    /// Headings above the chunk, outermost first, joined by [`PATH_SEPARATOR`].
    pub heading_path: String,
    pub text: String,
    /// Length in model tokens (special tokens excluded).
    pub tokens: usize,
}

pub struct Chunker {
    splitter: MarkdownSplitter<Sizer>,
    tokenizer: Arc<Tokenizer>,
}

/// Sizes text in the tokenizer's tokens, special tokens excluded: what
/// text-splitter's own sizer for a `tokenizers::Tokenizer` counts.
struct Sizer(Arc<Tokenizer>);

impl ChunkSizer for Sizer {
    fn size(&self, chunk: &str) -> usize {
        // Unigram segmentation only fails without an unknown-token id; the
        // byte length then overstates the size, so the chunk is split, not lost.
        self.0
            .encode_fast(chunk, false)
            .map_or(chunk.len(), |e| e.len())
    }
}

impl Chunker {
    pub fn new(tokenizer_json: &Path, settings: &config::Chunk) -> Result<Chunker, ChunkError> {
        let tokenizer = tokenizer::load(tokenizer_json).map_err(|e| ChunkError::Tokenizer {
            path: tokenizer_json.display().to_string(),
            message: e.to_string(),
        })?;
        Self::with_tokenizer(Arc::new(tokenizer), settings)
    }

    /// A chunker sizing with `tokenizer` (shared, e.g. with the embedder's).
    pub fn with_tokenizer(
        tokenizer: Arc<Tokenizer>,
        settings: &config::Chunk,
    ) -> Result<Chunker, ChunkError> {
        if settings.max_tokens == 0 || settings.max_tokens > 480 {
            return Err(ChunkError::Settings(format!(
                "max_tokens = {} must be between 1 and 480 (the model reads 512 tokens, title and headings included)",
                settings.max_tokens
            )));
        }
        // A truncating or padding tokenizer would report capped or inflated sizes.
        let tokenizer = if tokenizer.get_truncation().is_some() || tokenizer.get_padding().is_some()
        {
            let mut plain = (*tokenizer).clone();
            plain
                .with_truncation(None)
                .map_err(|e| ChunkError::Settings(e.to_string()))?;
            plain.with_padding(None);
            Arc::new(plain)
        } else {
            tokenizer
        };
        let chunk_config = ChunkConfig::new(settings.max_tokens)
            .with_overlap(settings.overlap_tokens)
            .map_err(|_| {
                ChunkError::Settings(format!(
                    "overlap_tokens = {} must be smaller than max_tokens = {}",
                    settings.overlap_tokens, settings.max_tokens
                ))
            })?
            .with_sizer(Sizer(tokenizer.clone()));
        Ok(Chunker {
            splitter: MarkdownSplitter::new(chunk_config),
            tokenizer,
        })
    }

    pub fn count_tokens(&self, text: &str) -> usize {
        self.tokenizer
            .encode_fast(text, false)
            .map(|e| e.len())
            .unwrap_or(0)
    }

    pub fn chunk(&self, body: &str) -> Vec<Chunk> {
        let headings = Headings::of(body);
        self.splitter
            .chunk_indices(body)
            .filter(|(_, text)| !text.trim().is_empty())
            .enumerate()
            .map(|(ordinal, (start, text))| Chunk {
                ordinal,
                start,
                end: start + text.len(),
                heading_path: headings.path_at(start),
                tokens: self.count_tokens(text),
                text: text.to_string(),
            })
            .collect()
    }
}

/// The text handed to the embedding model for a chunk: its document title and
/// heading path first, so a passage that only says "see below" still lands
/// near its topic.
pub fn embedding_text(title: &str, heading_path: &str, text: &str) -> String {
    let mut context = String::new();
    for part in [title.trim(), heading_path.trim()] {
        if part.is_empty() || context.ends_with(part) {
            continue;
        }
        if !context.is_empty() {
            context.push_str(PATH_SEPARATOR);
        }
        context.push_str(part);
    }
    // Long titles would eat the model's window; the text itself matters more.
    let context: String = context.chars().take(160).collect();
    if context.is_empty() {
        text.to_string()
    } else {
        format!("{context}\n\n{text}")
    }
}

/// Heading positions of a markdown body, to answer "which headings are above byte N".
struct Headings {
    /// (byte offset of the heading, level 1..=6, heading text)
    entries: Vec<(usize, usize, String)>,
}

impl Headings {
    fn of(body: &str) -> Headings {
        let mut entries = Vec::new();
        let mut current: Option<(usize, usize, String)> = None;
        for (event, range) in Parser::new(body).into_offset_iter() {
            match event {
                Event::Start(Tag::Heading { level, .. }) => {
                    current = Some((range.start, level as usize, String::new()));
                }
                Event::Text(t) | Event::Code(t) => {
                    if let Some((_, _, text)) = current.as_mut() {
                        text.push_str(&t);
                    }
                }
                Event::End(TagEnd::Heading(_)) => {
                    if let Some((offset, level, text)) = current.take() {
                        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                        if !text.is_empty() {
                            entries.push((offset, level, text));
                        }
                    }
                }
                _ => {}
            }
        }
        Headings { entries }
    }

    fn path_at(&self, offset: usize) -> String {
        let mut stack: Vec<(usize, &str)> = Vec::new();
        for (at, level, text) in &self.entries {
            if *at > offset {
                break;
            }
            while stack.last().is_some_and(|(l, _)| *l >= *level) {
                stack.pop();
            }
            stack.push((*level, text));
        }
        stack
            .iter()
            .map(|(_, t)| *t)
            .collect::<Vec<_>>()
            .join(PATH_SEPARATOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heading_path_follows_nesting() {
        let body = "# A\n\nintro\n\n## B\n\ntext b\n\n### C\n\ntext c\n\n## D\n\ntext d\n";
        let h = Headings::of(body);
        assert_eq!(h.path_at(0), "A");
        assert_eq!(h.path_at(body.find("text b").unwrap()), "A › B");
        assert_eq!(h.path_at(body.find("text c").unwrap()), "A › B › C");
        assert_eq!(h.path_at(body.find("text d").unwrap()), "A › D");
    }

    #[test]
    fn heading_path_of_text_before_any_heading_is_empty() {
        let body = "preface\n\n# A\n";
        assert_eq!(Headings::of(body).path_at(0), "");
    }

    #[test]
    fn embedding_text_prepends_context_once() {
        assert_eq!(embedding_text("T", "", "x"), "T\n\nx");
        assert_eq!(embedding_text("T", "T", "x"), "T\n\nx");
        assert_eq!(embedding_text("T", "A › B", "x"), "T › A › B\n\nx");
        assert_eq!(embedding_text("", "", "x"), "x");
    }
}
