//! The tokens BM25 counts, exactly as the embedded index counts them: its
//! FTS5 tables split the stored jieba terms once more with `unicode61
//! remove_diacritics 2` (`max_tokens` → `max` `tokens`, `café` → `cafe`,
//! full-width letters folded), and a Postgres index with other tokens would
//! rank differently. So the split is SQLite's own: plain lower-case ASCII
//! words and common CJK ideographs, which it leaves as they are, are taken
//! as they stand; anything else goes through the same tokenizer in an
//! in-memory FTS5 table of this thread.

use std::cell::RefCell;
use std::collections::HashMap;

use rusqlite::Connection;

/// The embedded index's full-text tokenizer (see `store::FTS_SCHEMA`).
const TOKENIZE: &str = "unicode61 remove_diacritics 2";

thread_local! {
    static SQLITE: RefCell<Option<Connection>> = const { RefCell::new(None) };
}

/// Whether FTS5 keeps `term` as one token unchanged: lower-case ASCII letters
/// and digits, or ideographs of Unicode 6.1's CJK blocks (category Lo:
/// no case, no diacritics).
fn unchanged(term: &str) -> bool {
    term.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        || term
            .chars()
            .all(|c| matches!(c as u32, 0x4E00..=0x9FCC | 0x3400..=0x4DB5))
}

/// The FTS5 tokens of each text (terms separated by spaces, as the
/// embedded index stores them, or a query term), in order.
pub fn tokenize(texts: &[&str]) -> Result<Vec<Vec<String>>, rusqlite::Error> {
    let mut slow: HashMap<&str, Vec<String>> = HashMap::new();
    for text in texts {
        for term in text.split(' ').filter(|t| !t.is_empty()) {
            if !unchanged(term) {
                slow.entry(term).or_default();
            }
        }
    }
    if !slow.is_empty() {
        let terms: Vec<&str> = slow.keys().copied().collect();
        for (term, tokens) in terms.iter().zip(sqlite_tokens(&terms)?) {
            slow.insert(term, tokens);
        }
    }
    Ok(texts
        .iter()
        .map(|text| {
            let mut out = Vec::new();
            for term in text.split(' ').filter(|t| !t.is_empty()) {
                match slow.get(term) {
                    Some(tokens) => out.extend(tokens.iter().cloned()),
                    None => out.push(term.to_string()),
                }
            }
            out
        })
        .collect())
}

/// The tokens of each of `terms` as SQLite's FTS5 makes them.
fn sqlite_tokens(terms: &[&str]) -> Result<Vec<Vec<String>>, rusqlite::Error> {
    SQLITE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let conn = match cell.as_mut() {
            Some(conn) => conn,
            None => cell.insert(open()?),
        };
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached("INSERT INTO temp.tok(rowid, x) VALUES (?1, ?2)")?;
            for (i, term) in terms.iter().enumerate() {
                insert.execute(rusqlite::params![i as i64, term])?;
            }
        }
        let mut out = vec![Vec::new(); terms.len()];
        {
            let mut rows = tx.prepare_cached(
                "SELECT doc, term FROM temp.tok_instances ORDER BY doc, \"offset\"",
            )?;
            let mut cursor = rows.query([])?;
            while let Some(row) = cursor.next()? {
                let doc: i64 = row.get(0)?;
                if let Some(tokens) = out.get_mut(doc as usize) {
                    tokens.push(row.get(1)?);
                }
            }
        }
        tx.execute("DELETE FROM temp.tok", [])?;
        tx.commit()?;
        Ok(out)
    })
}

fn open() -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open_in_memory()?;
    conn.execute_batch(&format!(
        "CREATE VIRTUAL TABLE temp.tok USING fts5(x, tokenize = '{TOKENIZE}');
         CREATE VIRTUAL TABLE temp.tok_instances USING fts5vocab(temp, tok, instance);"
    ))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::store::{Store, DB_FILE};
    use crate::index::terms::FieldTerms;
    use crate::index::NewChunk;

    /// The tokens the embedded index itself stores for `body`, read back
    /// from its catalogue.
    fn embedded_tokens(body: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let store = Store::open_rw(&path).unwrap();
        let doc = store
            .insert_document(&crate::index::NewDocument {
                path: "a.md",
                hash: "h",
                title: "",
                source: "",
                sections: &[],
                modified: None,
                indexed_at: "t",
            })
            .unwrap();
        let terms = FieldTerms {
            body: body.to_string(),
            ..FieldTerms::default()
        };
        store
            .insert_chunk(
                doc,
                &NewChunk {
                    ordinal: 0,
                    start: 0,
                    end: 0,
                    heading: "",
                    text: body,
                    tokens: 1,
                    terms: &terms,
                    vector: &[0.0],
                },
            )
            .unwrap();
        drop(store);
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE VIRTUAL TABLE temp.v USING fts5vocab(main, chunk_terms, instance);",
        )
        .unwrap();
        let mut stmt = conn
            .prepare("SELECT term FROM temp.v WHERE col = 'body' ORDER BY \"offset\"")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn tokens_equal_the_embedded_index_s_own() {
        let text = crate::index::terms::index_text(
            "max_tokens top_p RAG 检索增强生成 Café naïve Ｒａｇ ΣΊΣΥΦΟΣ Ёжик 𠀀字 ａｂｃ123 x__y _lead 2024年 🙂 tokens",
        );
        let ours = tokenize(&[&text]).unwrap().remove(0);
        assert_eq!(ours, embedded_tokens(&text));
        assert!(ours.contains(&"max".to_string()) && ours.contains(&"cafe".to_string()));
    }

    #[test]
    fn a_query_term_splits_as_an_fts5_phrase() {
        let got = tokenize(&["max_tokens", "大 语言 模型", "_", "rag"]).unwrap();
        assert_eq!(got[0], ["max", "tokens"]);
        assert_eq!(got[1], ["大", "语言", "模型"]);
        assert!(got[2].is_empty());
        assert_eq!(got[3], ["rag"]);
    }
}
