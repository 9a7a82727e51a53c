//! The audit log: every fetch and every privileged change, append-only and
//! hash-chained. Each record's hash covers its fields and the previous
//! record's hash, so changing, inserting or removing a record in the middle
//! breaks every hash after it; `silo audit verify` recomputes the chain. The
//! store also refuses `UPDATE` and `DELETE` on the table (triggers).
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use utoipa::ToSchema;

use silo_core::error::{Error, Result};

use super::store::{Store, db, now};

/// The hash before the first record.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, before it is chained.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    /// The organization acted in (`None` for operator actions).
    pub org_id: Option<String>,
    /// Who: `api-key:<id>`, `session:<id>`, `cli`.
    pub actor: String,
    /// What: `fetch`, `datasource.create`, `session.revoke`, …
    pub action: String,
    /// The record acted on.
    pub target: Option<String>,
    /// SHA-256 of the filter the host enforced (never the filter's values).
    pub filter_fingerprint: Option<String>,
    /// Rows released.
    pub rows: Option<i64>,
    /// Bytes released.
    pub bytes: Option<i64>,
    /// `ok`, or the error code.
    pub outcome: String,
    /// How long it took.
    pub duration_ms: Option<i64>,
    /// Free text (never a secret or a row value).
    pub detail: Option<String>,
}

/// A chained record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Unix seconds.
    pub at: i64,
    /// The event.
    #[serde(flatten)]
    pub event: AuditEvent,
    /// The previous record's hash.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

fn chain_hash(seq: i64, at: i64, e: &AuditEvent, prev: &str) -> Result<String> {
    // A JSON array fixes field order and escaping, so the bytes hashed are
    // the same on every host and database.
    let fields = serde_json::to_string(&(
        seq,
        at,
        &e.org_id,
        &e.actor,
        &e.action,
        &e.target,
        &e.filter_fingerprint,
        e.rows,
        e.bytes,
        &e.outcome,
        e.duration_ms,
        &e.detail,
    ))
    .map_err(|err| Error::Internal(format!("encoding an audit record: {err}")))?;
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(fields.as_bytes());
    Ok(hex::encode(h.finalize()))
}

/// Longest actor, action, target or outcome a record keeps (characters).
pub const MAX_FIELD_CHARS: usize = 200;
/// Longest detail a record keeps (characters).
pub const MAX_DETAIL_CHARS: usize = 4000;

/// `event` with every text field bounded and its control characters
/// escaped: an id a session or a key chose cannot flood the log or forge a
/// line in it.
fn bounded(event: &AuditEvent) -> AuditEvent {
    let field = |t: &str| bounded_text(t, MAX_FIELD_CHARS);
    AuditEvent {
        org_id: event.org_id.as_deref().map(field),
        actor: field(&event.actor),
        action: field(&event.action),
        target: event.target.as_deref().map(field),
        filter_fingerprint: event.filter_fingerprint.as_deref().map(field),
        outcome: field(&event.outcome),
        detail: event
            .detail
            .as_deref()
            .map(|d| bounded_text(d, MAX_DETAIL_CHARS)),
        ..event.clone()
    }
}

/// Most events one transaction appends.
const BATCH: usize = 256;

/// How the embedded store's writer holds a batch while other operations'
/// records are still to come (group commit's delay, as Postgres'
/// `commit_delay` with `commit_siblings`): concurrent fetches then share one
/// commit and one wake-up of the writer instead of paying one each. A batch
/// is committed as soon as the last record it waits for arrives.
#[derive(Debug, Clone, Copy)]
struct Hold {
    /// The longest a batch is held.
    delay: Duration,
    /// Held only when at least this many records are to come: a few
    /// fetches at a time commit at once rather than wait for each other.
    siblings: usize,
}

/// The writer's hold: under load (64 connections) 2 ms served 10- and
/// 100-row fetches 5–10% faster than 1 ms (medians of alternated
/// invocations) and as fast as 4 ms (BENCHMARKS.md).
const HOLD: Hold = Hold {
    delay: Duration::from_millis(2),
    siblings: 4,
};

/// Operations whose audit record is still to come (fetches under way).
#[derive(Debug, Default)]
pub(crate) struct ToCome {
    count: AtomicUsize,
    lock: std::sync::Mutex<()>,
    arrived: std::sync::Condvar,
}

/// One operation's record still to come; it stops counting when dropped,
/// which its owner does just before appending.
#[derive(Debug)]
pub(crate) struct Expecting(Arc<ToCome>);

impl ToCome {
    /// Counts one more record to come, until the returned value is dropped.
    fn expect(self: &Arc<Self>) -> Expecting {
        self.count.fetch_add(1, Ordering::SeqCst);
        Expecting(self.clone())
    }

    /// Records still to come.
    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// With at least `hold.siblings` records to come, blocks until none is,
    /// or `hold.delay` passes; with fewer, returns at once.
    fn wait(&self, hold: Hold) {
        if self.count() < hold.siblings {
            return;
        }
        let held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self
            .arrived
            .wait_timeout_while(held, hold.delay, |_| self.count() > 0);
    }
}

impl Drop for Expecting {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            // Under the lock: a writer that saw a record to come is
            // already waiting, and is woken.
            let _held = self.0.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.0.arrived.notify_all();
        }
    }
}

/// An event waiting for the writer, and where its record goes.
type Queued = (
    AuditEvent,
    tokio::sync::oneshot::Sender<Result<AuditRecord>>,
);

/// The audit writer: one task per store that appends, in one transaction
/// (one commit, one fsync), every event queued while the previous batch
/// was written. Concurrent fetches share commits instead of taking turns;
/// each still gets its record only once it is durable.
#[derive(Debug)]
pub struct Queue(tokio::sync::mpsc::Sender<Queued>, Option<Arc<ToCome>>);

impl Queue {
    /// Starts the writer on `store` (a copy without a queue of its own):
    /// a thread of its own on the embedded store, a task on Postgres.
    pub(crate) fn start(store: Store) -> Queue {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Queued>(4 * BATCH);
        if let Some(local) = store.local().cloned() {
            let to_come = Arc::new(ToCome::default());
            let waiting = to_come.clone();
            let spawned = std::thread::Builder::new()
                .name("silo-audit".into())
                .spawn(move || write_local(&local, rx, &waiting, HOLD));
            if let Err(e) = spawned {
                // Every append then fails (`busy`): nothing is released
                // without its record.
                tracing::error!(error = %e, "starting the audit writer");
            }
            return Queue(tx, Some(to_come));
        }
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                let events: Vec<&AuditEvent> = batch.iter().map(|(e, _)| e).collect();
                let written = append_batch(&store, &events).await;
                answer(&mut batch, written);
            }
        });
        Queue(tx, None)
    }

    /// Counts a record to come: the embedded store's writer holds a batch
    /// for it (see [`HOLD`]) until it is dropped. The Postgres
    /// store's writer holds nothing, so nothing is counted there.
    pub(crate) fn expect(&self) -> Option<Expecting> {
        self.1.as_ref().map(ToCome::expect)
    }
}

/// Answers each queued event of `batch` (emptied) with its record, or
/// every one with the batch's error.
fn answer(batch: &mut Vec<Queued>, written: Result<Vec<AuditRecord>>) {
    match written {
        Ok(records) => {
            for ((_, reply), record) in batch.drain(..).zip(records) {
                let _ = reply.send(Ok(record));
            }
        }
        Err(e) => {
            let why = e.to_string();
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Err(Error::Internal(why.clone())));
            }
        }
    }
}

/// The embedded store's writer thread: blocks for the next event, takes
/// every other one queued meanwhile, appends them in one transaction on its
/// own connection (one commit, one fsync) and answers each. Ends when the
/// last sender is gone.
fn write_local(
    local: &super::store::local::Local,
    mut rx: tokio::sync::mpsc::Receiver<Queued>,
    to_come: &ToCome,
    hold: Hold,
) {
    let mut conn = None;
    let mut batch: Vec<Queued> = Vec::with_capacity(BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        // Waiting here, not on the queue: the fetches appending meanwhile
        // do not each wake this thread.
        to_come.wait(hold);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(q) => batch.push(q),
                Err(_) => break,
            }
        }
        let events: Vec<&AuditEvent> = batch.iter().map(|(e, _)| e).collect();
        let written = match &mut conn {
            Some(c) => append_local(c, &events),
            None => local.writer().and_then(|mut c| {
                let r = append_local(&mut c, &events);
                conn = Some(c);
                r
            }),
        };
        if written.is_err() {
            // A connection that failed is opened afresh for the next batch.
            conn = None;
        }
        answer(&mut batch, written);
    }
}

/// [`append_batch`] on the embedded store's writer connection.
fn append_local(
    conn: &mut rusqlite::Connection,
    events: &[&AuditEvent],
) -> Result<Vec<AuditRecord>> {
    use super::store::local::sqlite;
    use rusqlite::OptionalExtension;
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sqlite)?;
    let head = tx
        .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        .and_then(|mut s| {
            s.query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                .optional()
        })
        .map_err(sqlite)?;
    let records = chain(head, events)?;
    {
        let mut insert = tx
            .prepare_cached(&format!(
                "{INSERT} (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
            ))
            .map_err(sqlite)?;
        for r in &records {
            let e = &r.event;
            insert
                .execute(rusqlite::params![
                    r.seq,
                    r.at,
                    e.org_id,
                    e.actor,
                    e.action,
                    e.target,
                    e.filter_fingerprint,
                    e.rows,
                    e.bytes,
                    e.outcome,
                    e.duration_ms,
                    e.detail,
                    r.prev_hash,
                    r.hash,
                ])
                .map_err(sqlite)?;
        }
    }
    tx.commit().map_err(sqlite)?;
    Ok(records)
}

/// `events` chained after `head` (seq and hash; `None`: the log is empty).
fn chain(head: Option<(i64, String)>, events: &[&AuditEvent]) -> Result<Vec<AuditRecord>> {
    let (mut seq, mut prev) = head.unwrap_or_else(|| (0, GENESIS.to_owned()));
    let at = now();
    let mut records = Vec::with_capacity(events.len());
    for event in events {
        seq += 1;
        let hash = chain_hash(seq, at, event, &prev)?;
        records.push(AuditRecord {
            seq,
            at,
            event: (*event).clone(),
            prev_hash: std::mem::replace(&mut prev, hash.clone()),
            hash,
        });
    }
    Ok(records)
}

/// Appends `event` after the current head, once it is committed; batched
/// with whatever else is being appended at the same moment.
pub async fn append(store: &Store, event: &AuditEvent) -> Result<AuditRecord> {
    let stopped = || Error::Internal("the audit writer stopped".into());
    let (reply, record) = tokio::sync::oneshot::channel();
    store
        .audit_queue()
        .0
        .send((bounded(event), reply))
        .await
        .map_err(|_| stopped())?;
    record.await.map_err(|_| stopped())?
}

/// An audit record's insert, up to its values (one placeholder per column,
/// in this order).
const INSERT: &str = "INSERT INTO audit (seq, at, org_id, actor, action, target, \
     filter_fingerprint, rows_, bytes, outcome, duration_ms, detail, prev_hash, hash) VALUES";

/// Records per `INSERT` statement (14 values each, well under both
/// databases' limits on bound values).
const INSERT_ROWS: usize = 64;

/// Appends `events` in order after the current head, in one transaction
/// under the store's write lock.
async fn append_batch(store: &Store, events: &[&AuditEvent]) -> Result<Vec<AuditRecord>> {
    let mut tx = store.begin().await?;
    let head = sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
    let head = match head {
        Some(r) => Some((
            r.try_get::<i64, _>(0).map_err(db)?,
            r.try_get::<String, _>(1).map_err(db)?,
        )),
        None => None,
    };
    let records = chain(head, events)?;
    // A statement per chunk of records, not per record: each statement is a
    // round trip to the store.
    for chunk in records.chunks(INSERT_ROWS) {
        let mut sql = format!("{INSERT} ");
        for i in 0..chunk.len() {
            let n = i * 14;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for c in 1..=14 {
                if c > 1 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", n + c));
            }
            sql.push(')');
        }
        let mut q = sqlx::query(&sql);
        for r in chunk {
            let e = &r.event;
            q = q
                .bind(r.seq)
                .bind(r.at)
                .bind(&e.org_id)
                .bind(&e.actor)
                .bind(&e.action)
                .bind(&e.target)
                .bind(&e.filter_fingerprint)
                .bind(e.rows)
                .bind(e.bytes)
                .bind(&e.outcome)
                .bind(e.duration_ms)
                .bind(&e.detail)
                .bind(&r.prev_hash)
                .bind(&r.hash);
        }
        q.execute(&mut *tx).await.map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    Ok(records)
}

/// Records of `org` (`None`: all), oldest first.
pub async fn records(store: &Store, org: Option<&str>) -> Result<Vec<AuditRecord>> {
    page(store, org, 0, i64::MAX).await
}

/// At most `limit` records of `org` (`None`: all) after sequence number
/// `after`, oldest first.
pub async fn page(
    store: &Store,
    org: Option<&str>,
    after: i64,
    limit: i64,
) -> Result<Vec<AuditRecord>> {
    let rows = sqlx::query(
        "SELECT seq, at, org_id, actor, action, target, filter_fingerprint, rows_, bytes, outcome, \
         duration_ms, detail, prev_hash, hash FROM audit WHERE ($1 IS NULL OR org_id = $1) \
         AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(org)
    .bind(after)
    .bind(limit)
    .fetch_all(store.pool())
    .await
    .map_err(db)?;
    rows.iter()
        .map(|r| {
            Ok(AuditRecord {
                seq: r.try_get(0).map_err(db)?,
                at: r.try_get(1).map_err(db)?,
                event: AuditEvent {
                    org_id: r.try_get(2).map_err(db)?,
                    actor: r.try_get(3).map_err(db)?,
                    action: r.try_get(4).map_err(db)?,
                    target: r.try_get(5).map_err(db)?,
                    filter_fingerprint: r.try_get(6).map_err(db)?,
                    rows: r.try_get(7).map_err(db)?,
                    bytes: r.try_get(8).map_err(db)?,
                    outcome: r.try_get(9).map_err(db)?,
                    duration_ms: r.try_get(10).map_err(db)?,
                    detail: r.try_get(11).map_err(db)?,
                },
                prev_hash: r.try_get(12).map_err(db)?,
                hash: r.try_get(13).map_err(db)?,
            })
        })
        .collect()
}

/// The result of checking the whole chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Records checked.
    pub records: u64,
    /// The last record's hash: keep it elsewhere to detect a truncated tail.
    pub head: String,
}

/// Recomputes every hash and link. `Err` names the first broken record.
pub async fn verify(store: &Store) -> Result<Verified> {
    verify_records(&records(store, None).await?)
}

/// [`verify`] over records already read.
pub fn verify_records(records: &[AuditRecord]) -> Result<Verified> {
    let mut prev = GENESIS.to_owned();
    for (i, r) in records.iter().enumerate() {
        let broken = |why: &str| {
            Error::Policy(format!(
                "the audit log is broken at record {}: {why}",
                r.seq
            ))
        };
        if r.seq != i as i64 + 1 {
            return Err(broken("a record is missing before it"));
        }
        if r.prev_hash != prev {
            return Err(broken("it does not follow the previous record"));
        }
        if chain_hash(r.seq, r.at, &r.event, &r.prev_hash)? != r.hash {
            return Err(broken("its contents do not match its hash"));
        }
        prev = r.hash.clone();
    }
    Ok(Verified {
        records: records.len() as u64,
        head: prev,
    })
}

/// A filter's fingerprint for the log: its canonical form under the keyed
/// hash (see [`silo_core::fingerprint`]). It identifies a filter without
/// revealing its values, even to a dictionary.
pub fn fingerprint(
    key: &silo_core::fingerprint::FingerprintKey,
    filter: &silo_types::RowFilter,
) -> String {
    key.of(format!("{filter:?}").as_bytes())
}

pub use silo_core::text::bounded_text;

#[cfg(test)]
mod tests {
    use super::*;

    /// A CLI action that succeeded.
    fn event(action: &str) -> AuditEvent {
        AuditEvent {
            actor: "cli".into(),
            action: action.into(),
            outcome: "ok".into(),
            ..AuditEvent::default()
        }
    }

    /// A new embedded store in a directory of its own (removed first).
    async fn temp_store(tag: &str) -> (std::path::PathBuf, Store) {
        let dir = std::env::temp_dir().join(format!("silo-audit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("s.db");
        let store = Store::open(&path.display().to_string()).await.unwrap();
        (dir, store)
    }

    fn record(seq: i64, prev: &str, action: &str) -> AuditRecord {
        let event = event(action);
        let hash = chain_hash(seq, 100 + seq, &event, prev).unwrap();
        AuditRecord {
            seq,
            at: 100 + seq,
            event,
            prev_hash: prev.into(),
            hash,
        }
    }

    #[test]
    fn text_in_a_record_is_bounded_and_shows_what_would_hide() {
        let forged = "ds\n2026 fetch ok\u{202E}kcatta\u{200B}";
        let shown = bounded_text(forged, 200);
        assert!(
            !shown.contains('\n') && !shown.contains('\u{202E}') && !shown.contains('\u{200B}')
        );
        assert!(
            shown.contains("\\n") && shown.contains("\\u{202e}"),
            "{shown}"
        );
        let long = bounded_text(&"x".repeat(60_000), MAX_FIELD_CHARS);
        assert_eq!(long.chars().count(), MAX_FIELD_CHARS + 1);
        let e = bounded(&AuditEvent {
            actor: "a\r\nb".into(),
            target: Some("t".repeat(10_000)),
            detail: Some("d".repeat(10_000)),
            ..AuditEvent::default()
        });
        assert_eq!(e.actor, "a\\r\\nb");
        assert_eq!(e.target.unwrap().chars().count(), MAX_FIELD_CHARS + 1);
        assert_eq!(e.detail.unwrap().chars().count(), MAX_DETAIL_CHARS + 1);
    }

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 1..=n {
            let prev = out.last().map_or(GENESIS.to_owned(), |r| r.hash.clone());
            out.push(record(i, &prev, &format!("a{i}")));
        }
        out
    }

    #[tokio::test]
    async fn the_sqlite_store_refuses_to_change_the_log() {
        let (dir, store) = temp_store("r").await;
        let e = event("test");
        append(&store, &e).await.unwrap();
        append(&store, &e).await.unwrap();
        for sql in [
            "UPDATE audit SET actor = 'x'",
            "DELETE FROM audit WHERE seq = 1",
        ] {
            let err = sqlx::query(sql).execute(store.pool()).await.unwrap_err();
            assert!(err.to_string().contains("append-only"), "{err}");
        }
        assert_eq!(verify(&store).await.unwrap().records, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Group commit's delay: with at least `siblings` records to come, the
    /// embedded store's writer holds its batch (here for as long as the test
    /// could run) until the last of them arrives, then commits it with what
    /// was queued meanwhile; with fewer to come it does not wait at all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_is_held_only_while_enough_records_are_to_come() {
        let (dir, store) = temp_store("h").await;
        let local = store.local().unwrap().clone();
        let to_come = Arc::new(ToCome::default());
        let (tx, rx) = tokio::sync::mpsc::channel::<Queued>(16);
        let waiting = to_come.clone();
        let hold = Hold {
            delay: Duration::from_secs(3600),
            siblings: 2,
        };
        let writer = std::thread::spawn(move || write_local(&local, rx, &waiting, hold));
        let send = |action: &str| {
            let (reply, record) = tokio::sync::oneshot::channel();
            tx.try_send((event(action), reply)).unwrap();
            record
        };
        let answered = |r| tokio::time::timeout(Duration::from_secs(60), r);
        let seq = |r: Result<Result<Result<AuditRecord>, _>, _>| r.unwrap().unwrap().unwrap().seq;

        assert_eq!(seq(answered(send("lone")).await), 1, "nothing to come");
        let one = to_come.expect();
        assert_eq!(seq(answered(send("alone")).await), 2, "fewer than siblings");

        let two = to_come.expect();
        assert_eq!(to_come.count(), 2);
        let mut first = send("first");
        let held = tokio::time::timeout(Duration::from_millis(300), &mut first).await;
        assert!(held.is_err(), "answered while enough records were to come");
        let second = send("second");
        drop(one);
        let still = tokio::time::timeout(Duration::from_millis(200), &mut first).await;
        assert!(still.is_err(), "answered while a record was still to come");
        drop(two);
        assert_eq!(to_come.count(), 0);
        assert_eq!(
            (seq(answered(first).await), seq(answered(second).await)),
            (3, 4)
        );
        assert_eq!(verify(&store).await.unwrap().records, 4);
        drop(tx);
        writer.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Appends from many tasks at once chain without a gap, also while
    /// another connection holds the write lock (the writer thread waits for
    /// it; the callers wait for their records).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_chain_and_outlast_a_held_write_lock() {
        let (dir, store) = temp_store("c").await;
        let path = dir.join("s.db");
        let burst = |from: usize| {
            (from..from + 100)
                .map(|i| {
                    let store = store.clone();
                    tokio::spawn(async move { append(&store, &event(&format!("a{i}"))).await })
                })
                .collect::<Vec<_>>()
        };
        for task in burst(0) {
            task.await.unwrap().unwrap();
        }

        let (locked, held) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch("BEGIN IMMEDIATE").unwrap();
            locked.send(()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
            c.execute_batch("COMMIT").unwrap();
        });
        held.recv().unwrap();
        let started = std::time::Instant::now();
        let tasks = burst(100);
        let mut seqs = Vec::new();
        for task in tasks {
            seqs.push(task.await.unwrap().unwrap().seq);
        }
        assert!(started.elapsed() >= std::time::Duration::from_millis(200));
        holder.join().unwrap();
        seqs.sort_unstable();
        assert_eq!(seqs, (101..=200).collect::<Vec<i64>>());
        assert_eq!(verify(&store).await.unwrap().records, 200);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_chain_verifies_and_any_edit_breaks_it() {
        let good = chain(4);
        assert_eq!(verify_records(&good).unwrap().records, 4);

        let mut edited = good.clone();
        edited[1].event.rows = Some(999);
        let err = verify_records(&edited).unwrap_err().to_string();
        assert!(err.contains("record 2"), "{err}");

        let mut removed = good.clone();
        removed.remove(2);
        assert!(verify_records(&removed).is_err());

        // Rewriting one record's hash too still breaks the next link.
        let mut rehashed = good.clone();
        rehashed[1].event.outcome = "denied".into();
        rehashed[1].hash = chain_hash(
            2,
            rehashed[1].at,
            &rehashed[1].event,
            &rehashed[1].prev_hash,
        )
        .unwrap();
        let err = verify_records(&rehashed).unwrap_err().to_string();
        assert!(err.contains("record 3"), "{err}");
    }
}
