//! `ragmap index --to`: the index copied to another place (an embedded
//! index into PostgreSQL, or back into a folder) with its vectors, so
//! nothing is embedded again. The copy is one full build of the destination
//! (one commit there), from one consistent read of the source.

use std::path::PathBuf;
use std::time::Instant;

use super::build::Changes;
use super::{embedded, postgres, IndexError};
use crate::config::Config;

/// What a copy did.
#[derive(Debug, serde::Serialize)]
pub struct CopyReport {
    pub from: String,
    pub to: String,
    pub documents: usize,
    pub chunks: usize,
    pub seconds: f64,
}

/// The configuration of the index at `to`: a PostgreSQL URL, or a folder
/// (relative to the current directory) for an embedded index.
fn destination(config: &Config, to: &str) -> Config {
    let mut dest = config.clone();
    dest.index.read_url = None;
    if postgres::is_postgres_url(to) {
        dest.index.url = Some(to.trim().to_string());
    } else {
        dest.index.url = None;
        let path = PathBuf::from(to);
        dest.paths.index = std::path::absolute(&path).unwrap_or(path);
    }
    dest
}

/// Copies the index `config` names to `to` (replacing what is there).
pub fn copy(config: &Config, to: &str) -> Result<CopyReport, IndexError> {
    let started = Instant::now();
    let dest = destination(config, to);
    let (from, to) = (super::location(config), super::location(&dest));
    if from == to {
        return Err(IndexError::Write {
            path: PathBuf::from(&to),
            detail: "it is the index being copied; name another place".into(),
        });
    }
    let export = match config.index.database_url() {
        Some(_) => postgres::export(config)?,
        None => embedded::export(&config.index_dir())?,
    };
    let (identity, pending, vectors) = export.into_pending();
    let mut target = super::target(&dest, true)?;
    target.commit(&Changes {
        full_rebuild: true,
        stale: &[],
        pending: &pending,
        vectors: &vectors,
        identity: &identity,
        now: crate::corpus::now_rfc3339(),
    })?;
    Ok(CopyReport {
        from,
        to,
        documents: pending.len(),
        chunks: vectors.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
