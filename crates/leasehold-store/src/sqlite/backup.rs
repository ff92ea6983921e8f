//! Backing up a running SQLite store and checking a copy before it is restored
//! (DESIGN §10).
//!
//! A backup is `VACUUM INTO`: one read transaction of its own, so the copy is the
//! database as of one moment (every seat write committed before it began, none after)
//! while the server's writer goes on committing; the copy is then fsynced, with its
//! directory. It holds no WAL: it is whole in one file.

use crate::{Result, StoreError};
use std::path::Path;

/// Writes a consistent copy of the SQLite database at `database` to `out` (which must
/// not exist), online, and makes it durable.
pub fn backup(database: &Path, out: &Path) -> Result<()> {
    if out.exists() {
        return Err(StoreError::invalid(
            "out",
            format!("{} exists: back up to a new file", out.display()),
        ));
    }
    if !database.exists() {
        return Err(StoreError::invalid(
            "database",
            format!("no SQLite store at {}", database.display()),
        ));
    }
    let conn = rusqlite::Connection::open_with_flags(
        database,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(corrupt)?;
    // The writer holds the write lock for a batch at a time; a reader never waits on it
    // in WAL mode, but opening may meet a checkpoint: wait rather than fail.
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(corrupt)?;
    let target = out
        .to_str()
        .ok_or_else(|| StoreError::invalid("out", "the path is not UTF-8"))?;
    conn.execute("VACUUM INTO ?1", [target]).map_err(corrupt)?;
    drop(conn);
    sync_file_and_dir(out)?;
    Ok(())
}

/// What a copy holds, as a restore checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyInfo {
    /// The last migration applied to it.
    pub migration: i64,
    /// The check value of the master key it was written with.
    pub master_check: Option<String>,
}

/// The newest migration this build knows (a copy from a newer build is refused).
pub fn latest_migration() -> i64 {
    sqlx::migrate!("./migrations/sqlite")
        .migrations
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

/// Checks a copy: SQLite's `integrity_check`, and reads its migration and master-key
/// check value (`master_check_key`: the meta row's name).
pub fn inspect_copy(copy: &Path, master_check_key: &str) -> Result<CopyInfo> {
    let conn = rusqlite::Connection::open_with_flags(
        copy,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(corrupt)?;
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .map_err(|e| {
            StoreError::Corrupt(format!("{} is not a SQLite database: {e}", copy.display()))
        })?;
    if integrity != "ok" {
        return Err(StoreError::Corrupt(format!(
            "{} fails SQLite's integrity check: {integrity}",
            copy.display()
        )));
    }
    let migration: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success",
            [],
            |row| row.get(0),
        )
        .map_err(|e| {
            StoreError::Corrupt(format!(
                "{} is not a Leasehold store (no migrations): {e}",
                copy.display()
            ))
        })?;
    let master_check = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [master_check_key],
            |row| row.get(0),
        )
        .ok();
    Ok(CopyInfo {
        migration,
        master_check,
    })
}

/// Places a checked copy at `database` (which must not exist): copied beside it under a
/// temporary name, fsynced, then renamed into place, so a crash leaves either no
/// database or the whole copy.
pub fn place_copy(copy: &Path, database: &Path) -> Result<()> {
    if database.exists() {
        return Err(StoreError::invalid(
            "database",
            format!("{} exists: restore into an empty store", database.display()),
        ));
    }
    let temporary = database.with_extension(format!("restoring-{}", std::process::id()));
    std::fs::copy(copy, &temporary).map_err(io)?;
    std::fs::File::open(&temporary)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&temporary, database).map_err(io)?;
    sync_file_and_dir(database)
}

fn sync_file_and_dir(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

fn corrupt(error: rusqlite::Error) -> StoreError {
    StoreError::Corrupt(error.to_string())
}

fn io(error: std::io::Error) -> StoreError {
    StoreError::Corrupt(error.to_string())
}
