//! One process's way into the index database: an async client on a runtime
//! of its own, behind a synchronous facade.
//!
//! The index interface is synchronous and is called from everywhere: plain
//! threads, `spawn_blocking` workers, and async handlers and `block_on`
//! futures (`/health`, `ragmap search`). A synchronous Postgres client
//! cannot be used or dropped on a thread inside a tokio runtime (it blocks
//! on a runtime of its own and panics), so every statement runs here, on
//! this module's runtime, and the caller waits on a channel, which is
//! allowed anywhere. The connections and their pool live and die on that
//! runtime; dropping the last handle shuts it down without blocking.
//!
//! One [`Database`] per process and settings, shared by every index handle
//! (a server's workers, its status view): one pool, one listener.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::types::{Kind, Type};
use tokio_postgres::NoTls;

use super::schema::LIVE;
use super::PgError;
use crate::config::IndexSettings;

/// The channel `ragmap index` notifies (payload: the new generation).
pub const CHANNEL: &str = "ragmap_generation";

/// How often a handle that is not notified may ask the database for its
/// generation (a replica, or the primary while its listener reconnects).
const POLL_EVERY: Duration = Duration::from_millis(200);

/// What a handle knows of the committed generations, shared with the listener.
#[derive(Default)]
pub struct Generations {
    /// The newest generation notified, polled or read by any snapshot.
    latest: AtomicI64,
    /// The listener is connected and listening: `latest` is current.
    listening: AtomicBool,
    last_poll: Mutex<Option<Instant>>,
}

impl Generations {
    pub fn saw(&self, generation: i64) {
        self.latest.fetch_max(generation, Ordering::AcqRel);
    }

    pub fn latest(&self) -> i64 {
        self.latest.load(Ordering::Acquire)
    }
}

pub struct Database {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    /// The primary, named without its password.
    pub at: String,
    /// Where searches go: the replica of `[index] read_url`, else the primary.
    pub read_at: String,
    primary: Pool,
    replica: Option<Pool>,
    /// How a writer or the listener connects to the primary (no statement timeout).
    direct: tokio_postgres::Config,
    pub statement_timeout: Duration,
    connect_timeout: Duration,
    pub generations: Arc<Generations>,
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
    vector_type: OnceLock<Type>,
}

/// The settings a [`Database`] is shared under.
fn key(settings: &IndexSettings) -> String {
    format!(
        "{:?}|{:?}|{}|{}|{}|{}",
        settings.database_url(),
        settings.read_url,
        settings.pool_size,
        settings.connect_timeout_secs,
        settings.statement_timeout_secs,
        settings.ef_search
    )
}

type Registry = Mutex<Vec<(String, Weak<Database>)>>;

fn registry() -> &'static Registry {
    static OPEN: OnceLock<Registry> = OnceLock::new();
    OPEN.get_or_init(|| Mutex::new(Vec::new()))
}

/// Seconds as a [`Duration`], for settings that may be zero or nonsense.
pub(super) fn seconds(secs: f64, fallback: f64) -> Duration {
    Duration::try_from_secs_f64(if secs > 0.0 { secs } else { fallback })
        .unwrap_or(Duration::from_secs_f64(fallback))
}

impl Database {
    /// The process's handle for `settings` (the URL set), made on first use.
    pub fn shared(settings: &IndexSettings) -> Result<Arc<Database>, PgError> {
        let key = key(settings);
        let mut open = registry().lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|(_, db)| db.strong_count() > 0);
        if let Some(db) = open
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, db)| db.upgrade())
        {
            return Ok(db);
        }
        let db = Arc::new(Database::new(settings)?);
        open.push((key, Arc::downgrade(&db)));
        Ok(db)
    }

    fn new(settings: &IndexSettings) -> Result<Database, PgError> {
        let url = settings.database_url().unwrap_or_default();
        let connect_timeout = seconds(settings.connect_timeout_secs, 5.0);
        let statement_timeout = seconds(settings.statement_timeout_secs, 30.0);
        let at = super::redact(url);
        let reads = super::session_config(url, settings, "ragmap", Some(statement_timeout))?;
        let direct = super::session_config(url, settings, "ragmap index", None)?;
        let replica_url = settings
            .read_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty());
        let replica = replica_url
            .map(|u| super::session_config(u, settings, "ragmap", Some(statement_timeout)))
            .transpose()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ragmap-postgres")
            .enable_all()
            .build()
            .map_err(|e| PgError::failed(&at, format!("cannot start its runtime: {e}")))?;
        let size = settings.pool_size.max(1);
        let pool = |config| pool(config, size, connect_timeout);
        Ok(Database {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            read_at: replica_url.map_or_else(|| at.clone(), super::redact),
            at,
            primary: pool(reads)?,
            replica: replica.map(pool).transpose()?,
            direct,
            statement_timeout,
            connect_timeout,
            generations: Arc::default(),
            listener: Mutex::new(None),
            vector_type: OnceLock::new(),
        })
    }

    /// Whether searches read a replica (`[index] read_url`).
    pub fn reads_replica(&self) -> bool {
        self.replica.is_some()
    }

    /// The pool searches take connections from.
    pub fn read_pool(&self) -> Pool {
        self.replica.clone().unwrap_or_else(|| self.primary.clone())
    }

    pub fn primary_pool(&self) -> Pool {
        self.primary.clone()
    }

    /// Runs `work` on the database runtime and waits for it, from any thread.
    pub fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, PgError>> + Send + 'static,
    ) -> Result<T, PgError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.recv()
            .unwrap_or_else(|_| Err(PgError::failed(&self.at, "its connection runtime stopped")))
    }

    /// [`Database::run`] for a read: never longer than a statement may take
    /// plus a connection, even when the network drops without a word.
    pub fn read<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, PgError>> + Send + 'static,
    ) -> Result<T, PgError> {
        let limit = self.statement_timeout + self.connect_timeout * 2 + Duration::from_secs(5);
        let (at, secs) = (self.read_at.clone(), limit.as_secs_f64());
        self.run(async move {
            tokio::time::timeout(limit, work)
                .await
                .unwrap_or_else(|_| Err(PgError::NoAnswer { at, secs }))
        })
    }

    /// A connection of its own to the primary, without a statement timeout
    /// (an index run: its lock, its one transaction, its COPYs).
    pub fn connect_direct(&self) -> Result<Arc<tokio_postgres::Client>, PgError> {
        let (config, at, limit) = (self.direct.clone(), self.at.clone(), self.connect_timeout);
        self.run(async move { connect(&config, &at, limit).await.map(Arc::new) })
    }

    /// The `vector` type of this database (its OID is the extension's).
    pub fn vector_type(&self, pool: &Pool, at: &str) -> Result<Type, PgError> {
        if let Some(t) = self.vector_type.get() {
            return Ok(t.clone());
        }
        let (pool, at) = (pool.clone(), at.to_string());
        let found = self.read(async move {
            let conn = checkout(&pool, &at).await?;
            let row = conn
                .query_opt(
                    "SELECT t.oid, n.nspname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
                     WHERE t.typname = 'vector' AND t.typnamespace = \
                     (SELECT extnamespace FROM pg_extension WHERE extname = 'vector')",
                    &[],
                )
                .await
                .map_err(|e| super::classify(&at, &e))?
                .ok_or(PgError::NoVector { at })?;
            Ok(Type::new("vector".into(), row.get(0), Kind::Simple, row.get(1)))
        })?;
        Ok(self.vector_type.get_or_init(|| found).clone())
    }

    /// Runs `work` on the database runtime without waiting for it.
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.handle.spawn(work);
    }

    /// The newest committed generation this process knows of: notified on
    /// the primary, else read from the database at most every 200 ms.
    pub fn latest_generation(&self) -> i64 {
        let generations = &self.generations;
        if generations.listening.load(Ordering::Acquire) {
            return generations.latest();
        }
        self.start_listener();
        {
            let mut last = generations
                .last_poll
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < POLL_EVERY) {
                return generations.latest();
            }
            *last = Some(Instant::now());
        }
        let pool = self.read_pool();
        let at = self.read_at.clone();
        if let Ok(Some(g)) = self.read(async move { generation(&pool, &at).await }) {
            generations.saw(g);
        }
        generations.latest()
    }

    /// Listens for index runs' notifications on the primary (once; a
    /// replica cannot listen, so handles reading one poll instead).
    fn start_listener(&self) {
        if self.replica.is_some() {
            return;
        }
        let mut listener = self.listener.lock().unwrap_or_else(|e| e.into_inner());
        if listener.is_none() {
            let task = listen(
                self.direct.clone(),
                self.generations.clone(),
                self.connect_timeout,
            );
            *listener = Some(self.handle.spawn(task));
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Ok(mut listener) = self.listener.lock() {
            if let Some(task) = listener.take() {
                task.abort();
            }
        }
        self.primary.close();
        if let Some(replica) = &self.replica {
            replica.close();
        }
        if let Some(runtime) = self.runtime.take() {
            // Outside any async context the connections get a moment to say
            // goodbye; inside one, blocking is not allowed.
            if tokio::runtime::Handle::try_current().is_err() {
                runtime.shutdown_timeout(Duration::from_millis(200));
            } else {
                runtime.shutdown_background();
            }
        }
    }
}

fn pool(
    config: tokio_postgres::Config,
    size: usize,
    connect_timeout: Duration,
) -> Result<Pool, PgError> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(connect_timeout))
        .recycle_timeout(Some(connect_timeout))
        .wait_timeout(Some(connect_timeout * 6))
        .build()
        .map_err(|e| PgError::failed("the connection pool", e.to_string()))
}

/// A pooled connection, or the error saying why there is none.
pub async fn checkout(pool: &Pool, at: &str) -> Result<deadpool_postgres::Object, PgError> {
    pool.get().await.map_err(|e| match e {
        PoolError::Backend(e) => super::classify(at, &e),
        PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => PgError::Busy {
            at: at.to_string(),
            size: pool.status().max_size,
        },
        PoolError::Timeout(_) => PgError::NoAnswer {
            at: at.to_string(),
            secs: pool.timeouts().create.map_or(0.0, |t| t.as_secs_f64()),
        },
        e => PgError::failed(at, e.to_string()),
    })
}

/// Connects with `config`, the connection driven on this runtime.
pub async fn connect(
    config: &tokio_postgres::Config,
    at: &str,
    limit: Duration,
) -> Result<tokio_postgres::Client, PgError> {
    let connecting = tokio::time::timeout(limit + Duration::from_secs(1), config.connect(NoTls));
    let (client, connection) = connecting
        .await
        .map_err(|_| PgError::NoAnswer {
            at: at.to_string(),
            secs: limit.as_secs_f64(),
        })?
        .map_err(|e| super::classify(at, &e))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Keeps a connection to the primary listening on [`CHANNEL`], reconnecting
/// with backoff; while it is down, handles poll.
async fn listen(config: tokio_postgres::Config, generations: Arc<Generations>, limit: Duration) {
    use futures_util::StreamExt;
    let mut backoff = Duration::from_millis(500);
    loop {
        if let Ok(Ok((client, mut connection))) =
            tokio::time::timeout(limit, config.connect(NoTls)).await
        {
            let seen = generations.clone();
            let messages = tokio::spawn(async move {
                let mut stream =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(Ok(message)) = stream.next().await {
                    if let tokio_postgres::AsyncMessage::Notification(n) = message {
                        if let Ok(g) = n.payload().parse::<i64>() {
                            seen.saw(g);
                        }
                    }
                }
            });
            if client
                .batch_execute(&format!("LISTEN {CHANNEL}"))
                .await
                .is_ok()
            {
                backoff = Duration::from_millis(500);
                // A commit between the last poll and LISTEN is read here.
                if let Ok(rows) = client
                    .query("SELECT generation FROM ragmap.state", &[])
                    .await
                {
                    if let Some(row) = rows.first() {
                        generations.saw(row.get(0));
                    }
                }
                generations.listening.store(true, Ordering::Release);
                let _ = messages.await;
            } else {
                messages.abort();
            }
            generations.listening.store(false, Ordering::Release);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Whether the index's tables exist; the schema version and generation when they do.
pub async fn version_and_generation(pool: &Pool, at: &str) -> Result<Option<(i32, i64)>, PgError> {
    let conn = checkout(pool, at).await?;
    let exists: bool = conn
        .query_one(
            &format!("SELECT to_regclass('{LIVE}.state') IS NOT NULL"),
            &[],
        )
        .await
        .map_err(|e| super::classify(at, &e))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = conn
        .query_one(
            &format!("SELECT schema_version, generation FROM {LIVE}.state"),
            &[],
        )
        .await
        .map_err(|e| super::classify(at, &e))?;
    Ok(Some((row.get(0), row.get(1))))
}

pub async fn generation(pool: &Pool, at: &str) -> Result<Option<i64>, PgError> {
    Ok(version_and_generation(pool, at).await?.map(|(_, g)| g))
}
