//! The server's retrieval workers and its admission limit.
//!
//! Each worker is a [`Retriever`] of its own (an SQLite connection, a view of
//! the HNSW file, an embedding session), so requests retrieve in parallel up
//! to the number of workers and wait for one beyond that. Every request that
//! needs work holds an [`Admission`] ticket from arrival to its last byte;
//! past `[server] queue` tickets the server answers 429 instead of queueing
//! without bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use super::error::ApiError;
use crate::query::Query;
use crate::retrieve::{Hit, Retriever};

pub struct Workers {
    idle: Mutex<Vec<Retriever>>,
    free: Semaphore,
}

impl Workers {
    pub fn new(retrievers: Vec<Retriever>) -> Workers {
        Workers {
            free: Semaphore::new(retrievers.len()),
            idle: Mutex::new(retrievers),
        }
    }

    /// Runs `job` on the next free worker, on a blocking thread (embedding and
    /// SQLite are CPU and disk work). A job that panics loses its worker, not
    /// the server.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Retriever) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = self
            .free
            .acquire()
            .await
            .map_err(|_| ApiError::internal("the server is shutting down"))?;
        let mut retriever = self
            .idle
            .lock()
            .ok()
            .and_then(|mut idle| idle.pop())
            .ok_or_else(|| ApiError::internal("no retrieval worker is left"))?;
        let done = tokio::task::spawn_blocking(move || {
            let out = job(&mut retriever);
            (retriever, out)
        })
        .await;
        match done {
            Ok((retriever, out)) => {
                if let Ok(mut idle) = self.idle.lock() {
                    idle.push(retriever);
                }
                Ok(out)
            }
            Err(_) => {
                // The worker is gone; so is its slot.
                permit.forget();
                Err(ApiError::internal("a retrieval worker failed"))
            }
        }
    }

    /// The passages for `query` ([`Retriever::passages`]) on the next free worker.
    pub async fn passages(&self, query: &Query) -> Result<Vec<Hit>, ApiError> {
        let query = query.clone();
        self.run(move |r| r.passages(&query))
            .await?
            .map_err(|e| ApiError::internal(format!("retrieval failed: {e}")))
    }
}

/// Counts requests in the server; see the module docs. Clones count together.
#[derive(Clone)]
pub struct Admission {
    inside: Arc<AtomicUsize>,
    limit: usize,
}

/// One admitted request; leaves when dropped.
#[derive(Debug)]
pub struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(limit: usize) -> Admission {
        Admission {
            inside: Arc::new(AtomicUsize::new(0)),
            limit: limit.max(1),
        }
    }

    pub fn admit(&self) -> Result<Ticket, ApiError> {
        let before = self.inside.fetch_add(1, Ordering::AcqRel);
        let ticket = Ticket(self.inside.clone());
        if before >= self.limit {
            return Err(ApiError::queue_full(self.limit));
        }
        Ok(ticket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_refuses_past_the_limit_and_frees_on_drop() {
        let admission = Admission::new(2);
        let a = admission.admit().unwrap();
        let _b = admission.admit().unwrap();
        let refused = admission.admit().unwrap_err();
        assert_eq!(refused.status, axum::http::StatusCode::TOO_MANY_REQUESTS);
        drop(a);
        assert!(admission.admit().is_ok());
    }
}
