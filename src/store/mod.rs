//! The model registry over sqlx: one code path for SQLite and PostgreSQL (runtime-checked
//! queries through the `Any` driver), migrations on start, status changes as conditional updates.

mod models;
mod sqlite;

pub use models::{ListFilter, ModelRecord, NewModel, StoredFile};

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database the registry lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgresql",
        }
    }
}

/// Registry errors. Conversions into the API error live in `error.rs`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("model {0} not found")]
    NotFound(i64),
    #[error("a model with the same {what} exists (id {existing_model_id})")]
    Conflict {
        existing_model_id: i64,
        what: &'static str,
    },
    #[error("a stored row is not valid: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the folder {path} for the SQLite database: {source}")]
    SqliteFolder {
        path: String,
        source: std::io::Error,
    },
}

/// The registry handle; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Bumped after every committed change, so that readers can tell an unchanged registry.
    generation: Arc<AtomicU64>,
}

impl Store {
    /// Connects, creating a SQLite file (and its folders) if needed, and runs the migrations.
    /// A SQLite URL may name a file or a folder that does not exist yet (`store/sqlite.rs`).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let url = sqlite::prepare(url)?;
        let url = url.as_ref();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        if backend == Backend::Sqlite {
            // WAL lets readers run beside the one writer; the busy timeout makes a second
            // writer wait its turn instead of failing.
            options = options
                .max_connections(8)
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; PRAGMA synchronous = NORMAL;")
                            .await?;
                        Ok(())
                    })
                });
        } else {
            options = options.max_connections(16);
        }
        let pool = options.connect(url).await?;
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&pool).await?;
        Ok(Store {
            pool,
            backend,
            generation: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Counts a committed change; called after every change.
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Changes committed so far by this process; equal values mean an unchanged registry.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// True when the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn parse_col<T: FromStr>(value: String, column: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}
