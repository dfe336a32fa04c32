//! Which characters are Chinese, and which language a text is written in:
//! shared by prompt building (answer language), the lexical index (which runs
//! go to jieba) and PDF extraction (which line breaks join without a space).

/// A CJK ideograph: the unified ideographs with extension A, the
/// supplementary-plane extensions B–F, and the compatibility ideographs
/// (both blocks). Punctuation and full-width forms are not ideographs: they
/// are no evidence of Chinese and are not words for the segmenter.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F)
}

/// A character of Chinese running text: an ideograph, CJK punctuation
/// (U+3000–U+303F: `。`, `、`, `「`…) or a full-width form (U+FF00–U+FFEF:
/// `，`, `：`, `（`…). Chinese lines join without a space between such characters.
pub fn is_cjk_text(c: char) -> bool {
    is_cjk(c) || matches!(c as u32, 0x3000..=0x303F | 0xFF00..=0xFFEF)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Language {
    Chinese,
    English,
}

/// Chinese when CJK ideographs make up a real share of the letters.
pub fn detect_language(text: &str) -> Language {
    let (mut cjk, mut latin) = (0usize, 0usize);
    for c in text.chars() {
        if is_cjk(c) {
            cjk += 1;
        } else if c.is_ascii_alphabetic() {
            latin += 1;
        }
    }
    // A CJK character carries about as much as a short English word.
    if cjk * 4 >= latin && cjk > 0 {
        Language::Chinese
    } else {
        Language::English
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ideographs_of_every_block_are_cjk() {
        // U+4E2D unified, U+3400 extension A, U+20000 extension B, U+F900 and
        // U+2F800 compatibility.
        for c in ['中', '㐀', '𠀀', '豈', '丽'] {
            assert!(is_cjk(c), "{c:?}");
            assert!(is_cjk_text(c), "{c:?}");
        }
    }

    #[test]
    fn punctuation_and_full_width_forms_are_text_not_ideographs() {
        for c in ['。', '、', '「', '，', '：', '（', 'Ａ'] {
            assert!(!is_cjk(c), "{c:?}");
            assert!(is_cjk_text(c), "{c:?}");
        }
        for c in ['a', '1', ' ', '.', 'é', 'あ'] {
            assert!(!is_cjk(c), "{c:?}");
            assert!(!is_cjk_text(c), "{c:?}");
        }
    }

    #[test]
    fn language_follows_the_ideographs() {
        assert_eq!(detect_language("什么是RAG？"), Language::Chinese);
        assert_eq!(
            detect_language("What is RAG and how does LangChain use it?"),
            Language::English
        );
        assert_eq!(
            detect_language("LangChain 的 Agent 怎么用"),
            Language::Chinese
        );
        // Full-width punctuation alone is no evidence of Chinese.
        assert_eq!(detect_language("RAG？（GraphRAG）"), Language::English);
    }
}
