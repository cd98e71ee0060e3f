//! Transaction replay's outcomes per cluster: counters the data path bumps and
//! the metrics, status page and `baton ctl status` show. The replay itself is
//! the data path's (`proxy/src/session/replay.rs`); the rules are the README's
//! "Transaction replay".

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Why a cut transaction was not finished on the new primary (its client got
/// ERROR 9101, or 9105 for `CommitUnknown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayFailure {
    /// A re-run statement's response differed from the one the client saw.
    Checksum,
    /// The transaction recorded more than `max_bytes`.
    Size,
    /// No replay finished within `timeout_ms` of the cut, or `max_attempts` ran out.
    Timeout,
    /// A COMMIT was cut with no answer and the new primary's history cannot
    /// tell whether it committed.
    CommitUnknown,
    /// The transaction did what cannot be re-run: LOCAL INFILE, a server-side
    /// cursor, a change of session state inside it.
    Unsupported,
}

impl ReplayFailure {
    pub const ALL: [ReplayFailure; 5] =
        [ReplayFailure::Checksum, ReplayFailure::Size, ReplayFailure::Timeout, ReplayFailure::CommitUnknown, ReplayFailure::Unsupported];

    /// The metric label and status key.
    pub fn name(self) -> &'static str {
        match self {
            ReplayFailure::Checksum => "checksum",
            ReplayFailure::Size => "size",
            ReplayFailure::Timeout => "timeout",
            ReplayFailure::CommitUnknown => "commit_unknown",
            ReplayFailure::Unsupported => "unsupported",
        }
    }
}

/// Monotonic counters: started = succeeded + failed (+ replays running now).
#[derive(Debug, Default)]
pub struct ReplayCounters {
    started: AtomicU64,
    succeeded: AtomicU64,
    /// Also the undecidable commits' 9105 (not started: nothing was re-run).
    failed: [AtomicU64; 5],
}

/// What the status page and ctl show.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayStats {
    pub started: u64,
    pub succeeded: u64,
    /// By reason (`checksum`, `size`, `timeout`, `commit_unknown`, `unsupported`).
    pub failed: std::collections::BTreeMap<&'static str, u64>,
}

impl ReplayCounters {
    pub fn started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    pub fn succeeded(&self) {
        self.succeeded.fetch_add(1, Ordering::Relaxed);
    }

    pub fn failed(&self, why: ReplayFailure) {
        self.failed[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> ReplayStats {
        ReplayStats {
            started: self.started.load(Ordering::Relaxed),
            succeeded: self.succeeded.load(Ordering::Relaxed),
            failed: ReplayFailure::ALL.iter().map(|f| (f.name(), self.failed[*f as usize].load(Ordering::Relaxed))).collect(),
        }
    }
}

/// Replays first: while transactions cut by a reparent or a crash are being
/// re-run, new work on the cluster waits (bounded), so that a replay finds the
/// new primary as the cut left it (an auto-increment id the client saw is not
/// yet given to another session's INSERT, a row it read not yet changed by a
/// request drained beside it).
///
/// The wait is bounded per burst, not per request: from the moment the first
/// of the running replays began, new work waits at most [`ReplayPriority::FOR`]
/// in all; after that it goes on beside them (a replay stuck on a lock does
/// not stall the cluster).
#[derive(Debug, Default)]
pub struct ReplayPriority {
    running: AtomicUsize,
    /// When `running` last went from 0 to 1.
    since: std::sync::Mutex<Option<tokio::time::Instant>>,
    done: tokio::sync::Notify,
}

/// Held by a session while its cut transaction waits for a primary and re-runs.
pub struct ReplayRunning<'a>(&'a ReplayPriority);

impl Drop for ReplayRunning<'_> {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.done.notify_waiters();
        }
    }
}

impl ReplayPriority {
    /// How long, from the first of a burst of replays, new work waits for them.
    pub const FOR: Duration = Duration::from_secs(2);

    pub fn begin(&self) -> ReplayRunning<'_> {
        let mut since = self.since.lock().unwrap_or_else(|p| p.into_inner());
        if self.running.fetch_add(1, Ordering::AcqRel) == 0 {
            *since = Some(tokio::time::Instant::now());
        }
        ReplayRunning(self)
    }

    /// Are replays running (one atomic load)?
    pub fn pending(&self) -> bool {
        self.running.load(Ordering::Acquire) > 0
    }

    /// Wait until no replay runs, at most until [`Self::FOR`] after the first
    /// of the running ones began.
    pub async fn wait_clear(&self) {
        let Some(since) = *self.since.lock().unwrap_or_else(|p| p.into_inner()) else { return };
        let deadline = since + Self::FOR;
        loop {
            let done = self.done.notified();
            if !self.pending() {
                return;
            }
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn new_work_waits_for_running_replays_but_not_forever() {
        let p = std::sync::Arc::new(ReplayPriority::default());
        assert!(!p.pending());
        p.wait_clear().await; // nothing running: at once
        let guard = p.begin();
        let waiter = {
            let p = p.clone();
            tokio::spawn(async move {
                let t = tokio::time::Instant::now();
                p.wait_clear().await;
                t.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(guard);
        assert_eq!(waiter.await.unwrap(), Duration::from_millis(300));
        // A replay that does not end: new work waits 2 s from its start in
        // all, not 2 s each.
        let _stuck = p.begin();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let t = tokio::time::Instant::now();
        p.wait_clear().await;
        assert_eq!(t.elapsed(), Duration::from_millis(500));
        let t = tokio::time::Instant::now();
        p.wait_clear().await;
        assert_eq!(t.elapsed(), Duration::ZERO);
    }
}
