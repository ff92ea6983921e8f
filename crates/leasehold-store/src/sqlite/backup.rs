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
    // Written beside OUT under a temporary name, readable by its owner only (it holds
    // the ledger and sealed secrets), then renamed: OUT is a whole copy or nothing.
    let temporary = Temporary(out.with_extension(format!("partial-{}", std::process::id())));
    create_private(&temporary.0)?;
    let target = temporary
        .0
        .to_str()
        .ok_or_else(|| StoreError::invalid("out", "the path is not UTF-8"))?;
    conn.execute("VACUUM INTO ?1", [target]).map_err(corrupt)?;
    drop(conn);
    std::fs::File::open(&temporary.0)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&temporary.0, out).map_err(io)?;
    temporary.keep();
    sync_file_and_dir(out)
}

/// The database file of a `sqlite:` store URL, as the store itself reads it (`None`:
/// not SQLite).
pub fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    use std::str::FromStr;
    if !url.starts_with("sqlite:") {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    Some(options.get_filename().to_path_buf())
}

/// SQLite's files beside a database (a WAL and its index, a rollback journal): a
/// database is restored only where none is left, or SQLite would replay them onto it.
fn leftovers(database: &Path) -> Vec<std::path::PathBuf> {
    ["-wal", "-shm", "-journal"]
        .iter()
        .map(|suffix| {
            let mut name = database.as_os_str().to_owned();
            name.push(suffix);
            std::path::PathBuf::from(name)
        })
        .filter(|path| path.exists())
        .collect()
}

/// A file removed when dropped: on every way out but success, which keeps it.
struct Temporary(std::path::PathBuf);

impl Temporary {
    /// The file was renamed into place: nothing to remove.
    fn keep(mut self) {
        self.0 = std::path::PathBuf::new();
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Creates an empty file only its owner can read (`VACUUM INTO` fills an empty file).
fn create_private(path: &Path) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map(drop).map_err(io)
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
    // A copy with a WAL beside it is not whole in its file (what is placed is the file).
    if let Some(left) = leftovers(copy).first() {
        return Err(StoreError::invalid(
            "in",
            format!(
                "{} is beside the copy: it is not a backup made by `leasehold backup` \
                 (whole in one file); copy it with `leasehold backup` first",
                left.display()
            ),
        ));
    }
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
    if let Some(left) = leftovers(database).first() {
        return Err(StoreError::invalid(
            "database",
            format!(
                "{} is left from an earlier store: SQLite would replay it onto the copy; \
                 remove it first",
                left.display()
            ),
        ));
    }
    let temporary = Temporary(database.with_extension(format!("restoring-{}", std::process::id())));
    create_private(&temporary.0)?;
    std::fs::copy(copy, &temporary.0).map_err(io)?;
    std::fs::File::open(&temporary.0)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&temporary.0, database).map_err(io)?;
    temporary.keep();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn database(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("source.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT); \
             INSERT INTO meta VALUES ('check', 'v');",
        )
        .unwrap();
        path
    }

    #[test]
    fn a_backup_is_private_whole_and_never_left_half_written() {
        let dir = tempfile::tempdir().unwrap();
        let source = database(dir.path());
        let out = dir.path().join("copy.db");
        backup(&source, &out).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&out).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the copy is readable by others: {mode:o}");
        }
        assert!(leftovers(&out).is_empty());
        // A failed backup leaves nothing under OUT's name or beside it.
        let missing = dir.path().join("missing.db");
        assert!(backup(&missing, &dir.path().join("other.db")).is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| !n.contains("partial") && n != "other.db"),
            "{names:?}"
        );
    }

    #[test]
    fn a_copy_is_not_placed_over_an_earlier_stores_wal() {
        let dir = tempfile::tempdir().unwrap();
        let source = database(dir.path());
        let out = dir.path().join("copy.db");
        backup(&source, &out).unwrap();
        let target = dir.path().join("restored.db");
        std::fs::write(dir.path().join("restored.db-wal"), b"old frames").unwrap();
        assert!(place_copy(&out, &target).is_err());
        assert!(!target.exists());
        std::fs::remove_file(dir.path().join("restored.db-wal")).unwrap();
        place_copy(&out, &target).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains("restoring")), "{names:?}");
    }

    #[test]
    fn the_store_url_names_the_same_file_the_store_opens() {
        assert_eq!(
            sqlite_path("sqlite:///var/lib/leasehold/leasehold.db?mode=rwc"),
            Some("/var/lib/leasehold/leasehold.db".into())
        );
        assert_eq!(sqlite_path("postgres://db/leasehold"), None);
    }
}
