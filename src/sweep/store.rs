//! The sweep store: one SQLite file (WAL mode) holding finished runs and claims of runs in
//! progress. Why SQLite, and the crash-safety argument, are in the [`super`] module docs.
//!
//! Tables (schema version [`SCHEMA_VERSION`]):
//! - `meta(name, value)`: `schema_version`, `created_by`;
//! - `runs(key, sweep, kind, coords, config, outcome, diverged, steps, train_loss, train_acc,
//!   test_loss, test_acc, seconds, owner, finished_at, record)`: one row per finished run;
//!   `record` is the full [`RunRecord`] as JSON, the other columns are copies for SQL/pandas;
//! - `claims(key, owner, claimed_at)`: runs being trained by a process `host:pid`;
//! - `failures(key, owner, error, failed_at)`: runs whose training returned an error (e.g. a
//!   subset larger than the data), created with the first failure (a store without it reads as
//!   one without failures, so older stores need no migration); a later success removes the
//!   row, and `sweep run` retries failed runs.
//!
//! Opening checks the file: a store whose pages are corrupt is refused by every command alike
//! (SQLite's `quick_check`), and an existing file without tables (e.g. empty) is a store only
//! for the commands that create one ([`Store::open`]), never for those that read
//! ([`Store::open_existing`]).
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use super::runner::RunRecord;
use crate::{Error, Result};

/// Version of the table layout; a store with another version is refused.
pub const SCHEMA_VERSION: i64 = 1;

/// How long a writer waits for another process's transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// An open store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// Outcome of trying to claim a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The run is ours to train.
    Granted,
    /// A record exists already.
    Done,
    /// Another live process is training it.
    Taken { owner: String },
}

/// Result of a merge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Records copied in.
    pub added: usize,
    /// Records already present with the same result.
    pub present: usize,
    /// Records already present with a different result (the existing one is kept).
    pub conflicts: usize,
}

fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::Store { path: path.to_path_buf(), reason: e.to_string() }
}

/// `host:pid` of this process.
pub fn this_owner() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

fn hostname() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

/// Whether a claim's owner is a process of this host that no longer exists.
fn owner_is_dead(owner: &str) -> bool {
    let Some((host, pid)) = owner.rsplit_once(':') else { return false };
    let Ok(pid) = pid.parse::<i32>() else { return false };
    if host != hostname() {
        return false;
    }
    if pid as u32 == std::process::id() {
        // Our own claim from an earlier, interrupted call (e.g. a notebook cell): take it back.
        return true;
    }
    // (signal 0 only checks whether the process exists: "no such process" means dead)
    let Some(pid) = (pid > 0).then(|| rustix::process::Pid::from_raw(pid)).flatten() else { return false };
    rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH)
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl Store {
    /// Opens the store at `path`, creating it (and its directory) if missing.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        let conn = Connection::open(path).map_err(sql_err(path))?;
        let mut s = Store { conn, path: path.to_path_buf() };
        s.configure()?;
        s.check_or_create(true)?;
        Ok(s)
    }

    /// Opens an existing store (an error if the file does not exist).
    pub fn open_existing(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::Store { path: path.to_path_buf(), reason: "no such store file".into() });
        }
        if std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len() == 0 {
            return Err(Error::IncompatibleStore { path: path.to_path_buf(), reason: "an empty file (0 bytes), not a widthlab sweep store".into() });
        }
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(sql_err(path))?;
        let mut s = Store { conn, path: path.to_path_buf() };
        s.configure()?;
        s.check_or_create(false)?;
        Ok(s)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn incompatible(&self, reason: impl Into<String>) -> Error {
        Error::IncompatibleStore { path: self.path.clone(), reason: reason.into() }
    }

    fn configure(&mut self) -> Result<()> {
        self.conn.busy_timeout(BUSY_TIMEOUT).map_err(sql_err(&self.path))?;
        // The first statement that reads the file: a non-SQLite file fails here.
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| self.incompatible(format!("not a SQLite database ({e})")))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Store { path: self.path.clone(), reason: format!("cannot enable WAL mode (journal_mode is {mode})") });
        }
        self.conn.pragma_update(None, "synchronous", "FULL").map_err(sql_err(&self.path))?;
        // Every page, so that no command reads around a corrupt one (a run's key is found in
        // the key index while its record sits on a broken page).
        let problems: Vec<String> = {
            let mut st = self.conn.prepare("PRAGMA quick_check").map_err(|e| self.corrupt(&e.to_string()))?;
            let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(|e| self.corrupt(&e.to_string()))?;
            rows.collect::<std::result::Result<_, _>>().map_err(|e| self.corrupt(&e.to_string()))?
        };
        if problems.first().is_some_and(|p| p != "ok") {
            return Err(self.corrupt(&problems[0]));
        }
        Ok(())
    }

    fn corrupt(&self, detail: &str) -> Error {
        Error::Store { path: self.path.clone(), reason: format!("the file is corrupt ({detail}); restore it from a copy, or start a new store") }
    }

    /// Creates the tables of an empty file (if `create`), or checks the schema version of an
    /// existing store.
    fn check_or_create(&mut self, create: bool) -> Result<()> {
        let path = self.path.clone();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err(&path))?;
        let tables: Vec<String> = {
            let mut st = tx.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").map_err(sql_err(&path))?;
            let rows = st.query_map([], |r| r.get(0)).map_err(sql_err(&path))?;
            rows.collect::<std::result::Result<_, _>>().map_err(sql_err(&path))?
        };
        if tables.is_empty() && !create {
            drop(tx);
            return Err(self.incompatible("a SQLite database without tables, not a widthlab sweep store"));
        }
        if tables.is_empty() {
            tx.execute_batch(
                "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE runs (
                    key TEXT PRIMARY KEY, sweep TEXT NOT NULL, kind TEXT NOT NULL,
                    coords TEXT NOT NULL, config TEXT NOT NULL, outcome TEXT NOT NULL,
                    diverged INTEGER NOT NULL, steps INTEGER NOT NULL,
                    train_loss REAL, train_acc REAL, test_loss REAL, test_acc REAL,
                    seconds REAL NOT NULL, owner TEXT NOT NULL, finished_at REAL NOT NULL,
                    record TEXT NOT NULL);
                 CREATE TABLE claims (key TEXT PRIMARY KEY, owner TEXT NOT NULL, claimed_at REAL NOT NULL);",
            )
            .map_err(sql_err(&path))?;
            tx.execute("INSERT INTO meta (name, value) VALUES ('schema_version', ?1), ('created_by', ?2)", params![SCHEMA_VERSION.to_string(), format!("widthlab {}", env!("CARGO_PKG_VERSION"))])
                .map_err(sql_err(&path))?;
            tx.commit().map_err(sql_err(&path))?;
            return Ok(());
        }
        if !tables.iter().any(|t| t == "meta") {
            drop(tx);
            return Err(self.incompatible(format!("a SQLite database without widthlab's `meta` table (tables: {}); not a widthlab sweep store", tables.join(", "))));
        }
        let version: Option<String> = tx.query_row("SELECT value FROM meta WHERE name = 'schema_version'", [], |r| r.get(0)).optional().map_err(sql_err(&path))?;
        drop(tx);
        match version.as_deref().map(str::parse::<i64>) {
            Some(Ok(SCHEMA_VERSION)) => Ok(()),
            Some(Ok(v)) => Err(self.incompatible(format!(
                "store schema version {v}, this widthlab ({}) reads version {SCHEMA_VERSION}; use the widthlab that wrote it to export it, or start a new store",
                env!("CARGO_PKG_VERSION")
            ))),
            _ => Err(self.incompatible("no readable schema_version in its meta table")),
        }
    }

    /// Keys of all finished runs.
    pub fn done_keys(&self) -> Result<std::collections::HashSet<String>> {
        let mut st = self.conn.prepare("SELECT key FROM runs").map_err(sql_err(&self.path))?;
        let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(sql_err(&self.path))?;
        rows.collect::<std::result::Result<_, _>>().map_err(sql_err(&self.path))
    }

    /// Number of finished runs.
    pub fn len(&self) -> Result<usize> {
        self.conn.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get::<_, i64>(0)).map(|n| n as usize).map_err(sql_err(&self.path))
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Claims `key` for `owner` unless it is done or claimed by a live process (claims of dead
    /// local processes and claims older than `reclaim_after` are taken over).
    pub fn claim(&mut self, key: &str, owner: &str, reclaim_after: Duration) -> Result<Claim> {
        let path = self.path.clone();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err(&path))?;
        let done: bool = tx.query_row("SELECT EXISTS(SELECT 1 FROM runs WHERE key = ?1)", [key], |r| r.get(0)).map_err(sql_err(&path))?;
        if done {
            return Ok(Claim::Done);
        }
        let existing: Option<(String, f64)> = tx.query_row("SELECT owner, claimed_at FROM claims WHERE key = ?1", [key], |r| Ok((r.get(0)?, r.get(1)?))).optional().map_err(sql_err(&path))?;
        if let Some((other, at)) = existing {
            let stale = other == owner || owner_is_dead(&other) || now() - at > reclaim_after.as_secs_f64();
            if !stale {
                return Ok(Claim::Taken { owner: other });
            }
        }
        tx.execute("INSERT OR REPLACE INTO claims (key, owner, claimed_at) VALUES (?1, ?2, ?3)", params![key, owner, now()]).map_err(sql_err(&path))?;
        tx.commit().map_err(sql_err(&path))?;
        Ok(Claim::Granted)
    }

    /// Drops a claim (after a failed run).
    pub fn release(&mut self, key: &str, owner: &str) -> Result<()> {
        self.conn.execute("DELETE FROM claims WHERE key = ?1 AND owner = ?2", params![key, owner]).map_err(sql_err(&self.path))?;
        Ok(())
    }

    /// Records a finished run and drops its claim (and an earlier failure), in one
    /// transaction. Returns false if a record with this key existed (it is kept).
    pub fn insert(&mut self, rec: &RunRecord) -> Result<bool> {
        let path = self.path.clone();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err(&path))?;
        let added = insert_in(&tx, rec, &path)?;
        tx.execute("DELETE FROM claims WHERE key = ?1", [&rec.key]).map_err(sql_err(&path))?;
        if has_table(&tx, "failures", &path)? {
            tx.execute("DELETE FROM failures WHERE key = ?1", [&rec.key]).map_err(sql_err(&path))?;
        }
        tx.commit().map_err(sql_err(&path))?;
        Ok(added)
    }

    /// Records that training `key` returned `error` and drops its claim, in one transaction
    /// (the run is not done: a later `sweep run` retries it).
    pub fn record_failure(&mut self, key: &str, owner: &str, error: &str) -> Result<()> {
        let path = self.path.clone();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err(&path))?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS failures (key TEXT PRIMARY KEY, owner TEXT NOT NULL, error TEXT NOT NULL, failed_at REAL NOT NULL)")
            .map_err(sql_err(&path))?;
        tx.execute("INSERT OR REPLACE INTO failures (key, owner, error, failed_at) VALUES (?1, ?2, ?3, ?4)", params![key, owner, error, now()]).map_err(sql_err(&path))?;
        tx.execute("DELETE FROM claims WHERE key = ?1 AND owner = ?2", params![key, owner]).map_err(sql_err(&path))?;
        tx.commit().map_err(sql_err(&path))
    }

    /// Runs whose last attempt failed: `(key, error)`, by key.
    pub fn failures(&self) -> Result<Vec<(String, String)>> {
        let tx = self.conn.unchecked_transaction().map_err(sql_err(&self.path))?;
        if !has_table(&tx, "failures", &self.path)? {
            return Ok(vec![]);
        }
        let mut st = tx.prepare("SELECT key, error FROM failures ORDER BY key").map_err(sql_err(&self.path))?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(sql_err(&self.path))?;
        rows.collect::<std::result::Result<_, _>>().map_err(sql_err(&self.path))
    }

    /// The record of `key`, if finished.
    pub fn get(&self, key: &str) -> Result<Option<RunRecord>> {
        let json: Option<String> = self.conn.query_row("SELECT record FROM runs WHERE key = ?1", [key], |r| r.get(0)).optional().map_err(sql_err(&self.path))?;
        json.map(|j| self.parse(&j)).transpose()
    }

    fn parse(&self, json: &str) -> Result<RunRecord> {
        let mut rec: RunRecord = serde_json::from_str(json).map_err(|e| self.incompatible(format!("a record cannot be read ({e})")))?;
        rec.fill_coords();
        Ok(rec)
    }

    /// Every record, by key.
    pub fn records(&self) -> Result<Vec<RunRecord>> {
        let mut st = self.conn.prepare("SELECT record FROM runs ORDER BY key").map_err(sql_err(&self.path))?;
        let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(sql_err(&self.path))?;
        let jsons: Vec<String> = rows.collect::<std::result::Result<_, _>>().map_err(sql_err(&self.path))?;
        jsons.iter().map(|j| self.parse(j)).collect()
    }

    /// The records of the given keys that are finished, in the order of `keys`.
    pub fn records_for(&self, keys: &[String]) -> Result<Vec<RunRecord>> {
        let mut out = vec![];
        for k in keys {
            if let Some(r) = self.get(k)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Claims currently held: `(key, owner)`.
    pub fn claims(&self) -> Result<Vec<(String, String)>> {
        Ok(self.claims_with_time()?.into_iter().map(|(k, o, _)| (k, o)).collect())
    }

    /// Claims that still hold: those of live processes, not older than `reclaim_after` (a
    /// claim of a killed process, or a stale one, is taken over by the next `sweep run`).
    pub fn live_claims(&self, reclaim_after: Duration) -> Result<Vec<(String, String)>> {
        let me = this_owner();
        Ok(self
            .claims_with_time()?
            .into_iter()
            .filter(|(_, owner, at)| *owner == me || !(owner_is_dead(owner) || now() - at > reclaim_after.as_secs_f64()))
            .map(|(k, o, _)| (k, o))
            .collect())
    }

    fn claims_with_time(&self) -> Result<Vec<(String, String, f64)>> {
        let mut st = self.conn.prepare("SELECT key, owner, claimed_at FROM claims ORDER BY key").map_err(sql_err(&self.path))?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(sql_err(&self.path))?;
        rows.collect::<std::result::Result<_, _>>().map_err(sql_err(&self.path))
    }

    /// Copies every record of the store at `other` that this store lacks (one transaction).
    pub fn merge_from(&mut self, other: &Path) -> Result<MergeStats> {
        let src = Store::open_existing(other)?;
        let records = src.records()?;
        let path = self.path.clone();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_err(&path))?;
        let mut stats = MergeStats::default();
        for r in &records {
            let existing: Option<String> = tx.query_row("SELECT record FROM runs WHERE key = ?1", [&r.key], |row| row.get(0)).optional().map_err(sql_err(&path))?;
            match existing {
                None => {
                    insert_in(&tx, r, &path)?;
                    stats.added += 1;
                }
                Some(j) => {
                    let mut e: RunRecord = serde_json::from_str(&j)?;
                    e.fill_coords();
                    if e.same_result(r) {
                        stats.present += 1;
                    } else {
                        stats.conflicts += 1;
                    }
                }
            }
        }
        tx.commit().map_err(sql_err(&path))?;
        Ok(stats)
    }
}

fn has_table(tx: &rusqlite::Transaction, name: &str, path: &Path) -> Result<bool> {
    tx.query_row("SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)", [name], |r| r.get(0)).map_err(sql_err(path))
}

fn insert_in(tx: &rusqlite::Transaction, rec: &RunRecord, path: &Path) -> Result<bool> {
    let o = &rec.output;
    let outcome = match &o.outcome {
        crate::train::Outcome::Completed => "completed".to_string(),
        crate::train::Outcome::Diverged { step, reason } => format!("diverged at step {step}: {reason}"),
    };
    let n = tx
        .execute(
            "INSERT OR IGNORE INTO runs (key, sweep, kind, coords, config, outcome, diverged, steps, train_loss, train_acc, test_loss, test_acc, seconds, owner, finished_at, record)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            params![
                rec.key,
                rec.sweep,
                rec.kind.to_string(),
                serde_json::to_string(&rec.coords)?,
                serde_json::to_string(&rec.config)?,
                outcome,
                rec.diverged() as i64,
                o.steps as i64,
                o.train_loss,
                o.train_acc,
                o.test_loss,
                o.test_acc,
                rec.seconds,
                rec.owner,
                rec.finished_at,
                serde_json::to_string(rec)?,
            ],
        )
        .map_err(sql_err(path))?;
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::runner::{RunKind, RunOutput};
    use crate::train::Outcome;

    pub(crate) fn record(key: &str, acc: f64) -> RunRecord {
        RunRecord {
            key: key.into(),
            sweep: "t".into(),
            kind: RunKind::Mlp,
            coords: [("width".to_string(), serde_json::Value::from(64))].into(),
            config: serde_json::json!({"lr": 0.1}),
            output: RunOutput {
                outcome: Outcome::Diverged { step: 3, reason: "non-finite loss (NaN)".into() },
                steps: 3,
                train_loss: None,
                train_acc: Some(acc),
                test_loss: None,
                test_acc: None,
                final_batch_loss: None,
                loss_curve: vec![Some(2.3), None],
            },
            seconds: 0.5,
            threads: 1,
            owner: this_owner(),
            finished_at: now(),
        }
    }

    #[test]
    fn records_round_trip_and_duplicates_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/s.db");
        let mut s = Store::open(&p).unwrap();
        assert!(s.insert(&record("00aa", 0.5)).unwrap());
        assert!(!s.insert(&record("00aa", 0.9)).unwrap());
        let s2 = Store::open(&p).unwrap();
        assert_eq!(s2.len().unwrap(), 1);
        let r = s2.get("00aa").unwrap().unwrap();
        // Read back with the coordinates its config implies today (`RunRecord::fill_coords`).
        let mut want = record("00aa", 0.5);
        want.fill_coords();
        assert!(r.same_result(&want) && r.diverged() && r.coords["width"] == 64 && r.coords["depth"] == 8);
        assert!(s2.get("ffff").unwrap().is_none());
    }

    #[test]
    fn claims_block_live_owners_and_yield_to_dead_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("s.db")).unwrap();
        let day = Duration::from_secs(86_400);
        let me = this_owner();
        // pid 1 exists on every Linux host: a live other process.
        let live = format!("{}:1", hostname());
        assert_eq!(s.claim("k1", &live, day).unwrap(), Claim::Granted);
        assert_eq!(s.claim("k1", &me, day).unwrap(), Claim::Taken { owner: live.clone() });
        // ... unless the claim is older than reclaim_after.
        assert_eq!(s.claim("k1", &me, Duration::ZERO).unwrap(), Claim::Granted);
        // A process that no longer exists (pid beyond pid_max).
        let dead = format!("{}:{}", hostname(), i32::MAX - 1);
        assert_eq!(s.claim("k2", &dead, day).unwrap(), Claim::Granted);
        assert_eq!(s.claim("k2", &me, day).unwrap(), Claim::Granted);
        // Another host's claim is respected.
        assert_eq!(s.claim("k3", "elsewhere:1", day).unwrap(), Claim::Granted);
        assert!(matches!(s.claim("k3", &me, day).unwrap(), Claim::Taken { .. }));
        s.insert(&record("k1", 0.1)).unwrap();
        assert_eq!(s.claim("k1", &me, day).unwrap(), Claim::Done);
        assert_eq!(s.claims().unwrap().iter().map(|c| c.0.as_str()).collect::<Vec<_>>(), vec!["k2", "k3"]);
        s.release("k2", &me).unwrap();
        assert_eq!(s.claims().unwrap().len(), 1);
    }

    #[test]
    fn incompatible_files_are_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.db");
        Store::open(&p).unwrap();
        let c = Connection::open(&p).unwrap();
        c.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'", []).unwrap();
        drop(c);
        let e = Store::open(&p).err().unwrap().to_string();
        assert!(e.contains("schema version 99") && e.contains("reads version 1"), "{e}");
        let q = dir.path().join("other.db");
        Connection::open(&q).unwrap().execute("CREATE TABLE t (x)", []).unwrap();
        assert!(Store::open(&q).err().unwrap().to_string().contains("not a widthlab sweep store"));
        let t = dir.path().join("text.db");
        std::fs::write(&t, "hello, this is not a database at all, just some text that is long enough ....................................................").unwrap();
        assert!(Store::open(&t).err().unwrap().to_string().contains("not a SQLite database"));
        assert!(Store::open_existing(&dir.path().join("missing.db")).err().unwrap().to_string().contains("no such store"));
    }

    #[test]
    fn empty_and_table_less_files_are_stores_only_for_commands_that_create_one() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        let e = Store::open_existing(&empty).err().unwrap().to_string();
        assert!(e.contains("empty file") && e.contains("not a widthlab sweep store"), "{e}");
        assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0, "left untouched");
        let bare = dir.path().join("bare.db");
        Connection::open(&bare).unwrap().execute_batch("PRAGMA user_version = 1").unwrap();
        assert!(Store::open_existing(&bare).err().unwrap().to_string().contains("without tables"));
        // `sweep run` and `merge --into` make a store of an empty file
        Store::open(&empty).unwrap().insert(&record("01", 0.5)).unwrap();
        assert_eq!(Store::open_existing(&empty).unwrap().len().unwrap(), 1);
    }

    #[test]
    fn a_corrupt_page_is_refused_by_every_command_alike() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.db");
        let mut s = Store::open(&p).unwrap();
        for i in 0..48 {
            let mut r = record(&format!("{i:016x}"), 0.5);
            r.output.loss_curve = vec![Some(1.0); 64];
            s.insert(&r).unwrap();
        }
        drop(s); // checkpoints the write-ahead log into the file
        let mut bytes = std::fs::read(&p).unwrap();
        let pages = bytes.len() / 4096;
        assert!(pages > 8, "{pages} pages");
        // one page of the runs table (the records; the key index is elsewhere) overwritten
        let page = (1..pages).find(|&k| bytes[k * 4096] == 0x0d && bytes[k * 4096 + 4096 - 1] != 0).unwrap_or(pages / 2);
        bytes[page * 4096..(page + 1) * 4096].fill(0xA5);
        std::fs::write(&p, &bytes).unwrap();
        for e in [Store::open(&p).err(), Store::open_existing(&p).err()] {
            let e = e.expect("refused").to_string();
            assert!(e.contains("corrupt"), "{e}");
        }
    }

    #[test]
    fn failures_are_recorded_until_the_run_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("s.db")).unwrap();
        assert!(s.failures().unwrap().is_empty(), "no failures table yet");
        let me = this_owner();
        assert_eq!(s.claim("00aa", &me, Duration::from_secs(60)).unwrap(), Claim::Granted);
        s.record_failure("00aa", &me, "data.train_subset 9999 exceeds the 256 training examples").unwrap();
        assert_eq!(s.failures().unwrap(), vec![("00aa".to_string(), "data.train_subset 9999 exceeds the 256 training examples".to_string())]);
        assert!(s.claims().unwrap().is_empty(), "the failed run's claim is dropped");
        assert_eq!(s.len().unwrap(), 0, "a failure is not a record");
        s.insert(&record("00aa", 0.5)).unwrap();
        assert!(s.failures().unwrap().is_empty());
    }

    #[test]
    fn live_claims_leave_out_killed_and_stale_owners() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("s.db")).unwrap();
        let day = Duration::from_secs(86_400);
        let (live, dead) = (format!("{}:1", hostname()), format!("{}:{}", hostname(), i32::MAX - 1));
        s.claim("k1", &live, day).unwrap();
        s.claim("k2", &dead, day).unwrap();
        s.claim("k3", "elsewhere:7", day).unwrap();
        assert_eq!(s.claims().unwrap().len(), 3);
        let keys = |c: Vec<(String, String)>| c.into_iter().map(|c| c.0).collect::<Vec<_>>();
        assert_eq!(keys(s.live_claims(day).unwrap()), vec!["k1", "k3"]);
        assert!(s.live_claims(Duration::ZERO).unwrap().is_empty(), "stale claims do not hold either");
    }

    #[test]
    fn merge_adds_missing_and_counts_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, m) = (dir.path().join("a.db"), dir.path().join("b.db"), dir.path().join("m.db"));
        let mut sa = Store::open(&a).unwrap();
        sa.insert(&record("01", 0.1)).unwrap();
        sa.insert(&record("02", 0.2)).unwrap();
        let mut sb = Store::open(&b).unwrap();
        sb.insert(&record("02", 0.2)).unwrap();
        sb.insert(&record("03", 0.3)).unwrap();
        let mut sm = Store::open(&m).unwrap();
        assert_eq!(sm.merge_from(&a).unwrap(), MergeStats { added: 2, present: 0, conflicts: 0 });
        assert_eq!(sm.merge_from(&b).unwrap(), MergeStats { added: 1, present: 1, conflicts: 0 });
        let mut sc = Store::open(&dir.path().join("c.db")).unwrap();
        sc.insert(&record("03", 0.9)).unwrap();
        drop(sc);
        assert_eq!(sm.merge_from(&dir.path().join("c.db")).unwrap().conflicts, 1);
        assert_eq!(sm.len().unwrap(), 3);
        assert_eq!(sm.get("03").unwrap().unwrap().output.train_acc, Some(0.3));
    }
}
