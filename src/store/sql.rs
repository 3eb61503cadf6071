//! The store on sqlx: [`SqlStore`], one type for PostgreSQL and SQLite.
//!
//! Every concern's trait is implemented once, generically, for `SqlStore<DB>` where `DB`
//! is a [`Dialect`]: the SQL is the same on both databases (`$1`-style parameters read the
//! same on both), and what differs is the dialect's: the migrations, one clause
//! (` FOR UPDATE`), and how to count the rows a statement changed. Rows are read into
//! `#[derive(sqlx::FromRow)]` types, kept beside their concern's trait.
//!
//! sqlx's bounds for running queries generically (an executor for connections, arguments,
//! and each Rust type a column holds) cannot be stated once: Rust implies a trait's
//! supertraits at its uses, but not its other `where` clauses, so a `Dialect` that listed
//! them would have each use list them again anyway. Each impl names the ones it uses in
//! its `where` clause instead, [`Column`] and [`Param`] keeping those clauses short. The
//! impls are type-checked once, generically; `store::open` instantiates them for the two
//! databases.

use super::StoreError;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Database, Decode, Encode, Pool, Postgres, Sqlite, Type};
use std::str::FromStr;
use std::time::Duration;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// What sets the two databases apart, for the SQL written once for both.
pub trait Dialect: Database {
    /// Appended to a `SELECT` of a row the transaction then updates. In PostgreSQL the row
    /// is locked, so that concurrent transactions take turns (` FOR UPDATE`); SQLite has
    /// one writer at a time, so a transaction's reads are serialized already.
    const LOCK_FOR_UPDATE: &'static str;

    /// The database's migrations (`migrations/sqlite`, `migrations/postgres`).
    fn migrator() -> &'static Migrator;

    /// How many rows a statement changed (sqlx has it on each database's result type,
    /// under no trait).
    fn rows_affected(done: Self::QueryResult) -> u64;
}

impl Dialect for Sqlite {
    const LOCK_FOR_UPDATE: &'static str = "";

    fn migrator() -> &'static Migrator {
        &SQLITE_MIGRATIONS
    }

    fn rows_affected(done: Self::QueryResult) -> u64 {
        done.rows_affected()
    }
}

impl Dialect for Postgres {
    const LOCK_FOR_UPDATE: &'static str = " FOR UPDATE";

    fn migrator() -> &'static Migrator {
        &POSTGRES_MIGRATIONS
    }

    fn rows_affected(done: Self::QueryResult) -> u64 {
        done.rows_affected()
    }
}

/// A Rust type that a column of `DB` holds: bound, and read back.
pub trait Column<DB: Database>:
    for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB> + Send + Sync
{
}

impl<DB: Database, T> Column<DB> for T where
    T: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB> + Send + Sync
{
}

/// A value borrowed for `'q` and bound as a parameter of `DB` (`&str`, `&[u8]`).
pub trait Param<'q, DB: Database>: Encode<'q, DB> + Type<DB> + Send + Sync {}

impl<'q, DB: Database, T> Param<'q, DB> for T where T: Encode<'q, DB> + Type<DB> + Send + Sync {}

/// The store on a sqlx pool of database `DB`.
pub struct SqlStore<DB: Database> {
    pub(super) pool: Pool<DB>,
    /// Where writes go. On SQLite, one connection: SQLite discards a connection's page
    /// cache whenever another connection has written, so that writes spread over a pool
    /// each start cold and read their indexes back from the file (the batched ledger and
    /// audit writes ran at half speed); and they take turns on the database's one write
    /// lock anyway. On PostgreSQL, the pool itself.
    pub(super) writer: Pool<DB>,
}

impl SqlStore<Sqlite> {
    /// Opens a SQLite store, creating its file (and directory) when missing.
    pub async fn open_sqlite(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        if let Some(dir) = options
            .get_filename()
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options.clone())
            .await?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        Ok(SqlStore { pool, writer })
    }
}

impl SqlStore<Postgres> {
    /// Opens a PostgreSQL store.
    pub async fn open_postgres(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        Ok(SqlStore {
            writer: pool.clone(),
            pool,
        })
    }
}

/// The current time at the precision both databases keep (microseconds), so that what is
/// answered after a write equals what is read back later.
pub(super) fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// Whether an insert failed on a unique constraint.
pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}
