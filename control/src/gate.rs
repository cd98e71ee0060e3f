//! The buffer gate of one cluster: every request bound for the primary from a
//! session outside a transaction passes through it.
//!
//! Phases: `Idle` (pass) -> `Buffering` (hold, FIFO, bounded) -> `Draining`
//! (release the held requests in order, `drain_concurrency` at a time) -> `Idle`.
//! The gate never decides on its own that a new primary is ready:
//! [`Gate::release`] is the one way to release, and it takes a typed
//! [`Release`] cause: the [`crate::supervisor`] when every leadership condition
//! holds, or when a suspicion did not come true (refused once a reparent or
//! failover has taken the episode over); the orchestrator after an undo or a
//! refused failover that gave the old primary back. Requests evicted (buffer
//! full, window expired, max failover duration) get an error and are never
//! executed later.
//!
//! Lock order (never taken the other way round): the cluster's `reparent_lock`
//! (tokio, held across a whole procedure) -> `inner` (std, never across an
//! await) -> `throttle` / `limits` (std, leaf locks). The watch channel is
//! written under `inner`; nothing here takes `inner` while holding a leaf lock.
//!
//! The gate also counts `active` sessions: those executing a command or inside a
//! transaction. A planned reparent waits for that count to reach zero (the grace
//! period) before it revokes the old primary.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};

/// Buffer limits (config `[buffer]`).
#[derive(Debug, Clone)]
pub struct BufferLimits {
    /// Longest a single request waits in the buffer.
    pub window: Duration,
    /// Requests held at most; more evict the oldest.
    pub size: usize,
    /// Longest a buffering episode lasts before every held request fails.
    pub max_failover_duration: Duration,
    /// A reactive episode (not a planned reparent) does not start sooner than this
    /// after the previous one ended.
    pub min_time_between_failovers: Duration,
    /// Held requests executing at once while draining.
    pub drain_concurrency: usize,
}

/// Where the gate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Idle,
    Buffering,
    Draining,
}

/// Why a held request was not executed. Each maps to one documented client error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateError {
    /// Evicted because the buffer was full (the oldest request goes).
    BufferFull,
    /// Held longer than the per-request window.
    WindowExpired,
    /// The failover lasted longer than the max failover duration.
    MaxDuration,
    /// No primary is coming: the named one answers but cannot be re-established
    /// and nothing else was promoted ([`Gate::no_primary`]); the reason is in
    /// [`GateStatus::no_primary`]. Answered at once until that changes.
    NoPrimary,
}

/// Why an episode was released (drained to a primary). Each names who may release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Release {
    /// The supervisor: every leadership condition holds for the topology's primary.
    ConditionsHold,
    /// The supervisor: a reactive suspicion that did not come true (same term,
    /// the primary answers writable and not replicating). Refused once a planned
    /// reparent or a failover has taken the episode over.
    SuspicionCleared,
    /// A planned reparent undone (or cancelled) before the new primary was
    /// published: the old primary is writable again at the same term.
    Undone,
    /// A failover that promoted nothing and gave back the old primary, which was
    /// writable when it was revoked.
    Refused,
}

/// The gate's state as watchers (status API, supervisor, orchestrator) see it.
#[derive(Debug, Clone, Serialize)]
pub struct GateStatus {
    pub phase: Phase,
    /// Increases with every buffering episode.
    pub episode: u64,
    /// The topology term when buffering began; a new primary must have a newer one.
    pub start_term: u64,
    /// The primary when buffering began (to be revoked).
    pub old_primary: String,
    /// Why buffering began.
    pub reason: String,
    /// Whether a planned reparent (rather than a failure signal) began it.
    pub planned: bool,
    #[serde(skip)]
    pub since: Option<Instant>,
    /// Requests held now.
    pub queued: usize,
    /// Why the last episode was released (None: never, or it failed).
    pub last_release: Option<Release>,
    /// Set while no primary is coming (see [`Gate::no_primary`]): why, and what
    /// an operator can do. Requests fail at once with [`GateError::NoPrimary`].
    pub no_primary: Option<String>,
    /// Sessions executing a command or inside a transaction.
    pub active: usize,
}

/// Monotonic counters (the invariant buffered = drained + evicted + queued holds).
#[derive(Debug, Default)]
pub struct GateCounters {
    pub buffered: AtomicU64,
    pub drained: AtomicU64,
    pub evicted_full: AtomicU64,
    pub evicted_window: AtomicU64,
    pub evicted_max_duration: AtomicU64,
    pub evicted_client_gone: AtomicU64,
    pub skipped_too_recent: AtomicU64,
    pub episodes: AtomicU64,
}

/// What a held request is told: admitted (already counted as active: dropped
/// unreceived, the admission leaves again), or why not.
type Verdict = Result<Admission, GateError>;

struct Waiter {
    id: u64,
    tx: oneshot::Sender<Verdict>,
}

struct Inner {
    /// Durations of ended episodes, not yet taken by the metrics exporter.
    ended: Vec<Duration>,
    /// How the most recent episodes ended (released, and why, or failed).
    outcomes: VecDeque<(u64, Result<Release, GateError>)>,
    status: GateStatus,
    queue: VecDeque<Waiter>,
    next_id: u64,
    last_end: Option<Instant>,
}

impl Inner {
    fn ended_as(&mut self, episode: u64, how: Result<Release, GateError>) {
        if self.outcomes.len() >= 64 {
            self.outcomes.pop_front();
        }
        self.outcomes.push_back((episode, how));
    }
}

/// One cluster's gate.
pub struct Gate {
    /// Mirrors of `status.phase` / `status.episode` / the active count, read
    /// without the lock on every command (the hot path).
    phase: AtomicU8,
    episode: AtomicU64,
    active: AtomicUsize,
    /// Woken when `active` drops to zero while an episode is on.
    inactive: tokio::sync::Notify,
    /// Mirror of `status.no_primary.is_some()` (fail fast without the lock).
    no_primary: std::sync::atomic::AtomicBool,
    /// Set while a reparent's prepare step slows writers down so the candidate can
    /// catch up: admissions then take a permit of `throttle`.
    throttled: std::sync::atomic::AtomicBool,
    throttle: Mutex<Option<Arc<Semaphore>>>,
    inner: Mutex<Inner>,
    tx: watch::Sender<GateStatus>,
    limits: Mutex<BufferLimits>,
    drain: Arc<Semaphore>,
    pub counters: GateCounters,
}

/// Permission to execute one command (and, inside a transaction, the ones after it).
/// Counts as `active` until dropped.
pub struct Admission {
    gate: Arc<Gate>,
    _drain_permit: Option<OwnedSemaphorePermit>,
    _throttle_permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.gate.leave();
    }
}

impl Admission {
    /// Drop the drain and throttle permits (the command is done) but stay active.
    pub fn finish_drain(&mut self) {
        self._drain_permit = None;
        self._throttle_permit = None;
    }
}

impl Gate {
    pub fn new(limits: BufferLimits) -> Arc<Gate> {
        let status = GateStatus {
            phase: Phase::Idle,
            episode: 0,
            start_term: 0,
            old_primary: String::new(),
            reason: String::new(),
            planned: false,
            since: None,
            queued: 0,
            last_release: None,
            no_primary: None,
            active: 0,
        };
        let (tx, _) = watch::channel(status.clone());
        let permits = limits.drain_concurrency.max(1);
        Arc::new(Gate {
            phase: AtomicU8::new(0),
            episode: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            inactive: tokio::sync::Notify::new(),
            throttled: std::sync::atomic::AtomicBool::new(false),
            throttle: Mutex::new(None),
            no_primary: std::sync::atomic::AtomicBool::new(false),
            inner: Mutex::new(Inner { ended: Vec::new(), outcomes: VecDeque::new(), status, queue: VecDeque::new(), next_id: 1, last_end: None }),
            tx,
            limits: Mutex::new(limits),
            drain: Arc::new(Semaphore::new(permits)),
            counters: GateCounters::default(),
        })
    }

    /// Replace the limits (config reload); applies to requests arriving from now on.
    pub fn set_limits(&self, limits: BufferLimits) {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    pub fn limits(&self) -> BufferLimits {
        self.limits.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut i = self.lock();
        let r = f(&mut i);
        i.status.queued = i.queue.len();
        i.status.active = self.active.load(Ordering::SeqCst);
        self.phase.store(phase_code(i.status.phase), Ordering::SeqCst);
        self.episode.store(i.status.episode, Ordering::SeqCst);
        self.tx.send_replace(i.status.clone());
        r
    }

    /// How episode `episode` ended: released (and why) or failed; None while it
    /// runs (or long forgotten: the last 64 are kept).
    pub fn outcome(&self, episode: u64) -> Option<Result<Release, GateError>> {
        self.lock().outcomes.iter().find(|(e, _)| *e == episode).map(|(_, o)| *o)
    }

    fn enter(&self) {
        self.active.fetch_add(1, Ordering::SeqCst);
    }

    fn leave(&self) {
        if self.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.inactive.notify_waiters();
        }
    }

    /// Durations of the episodes that ended since the last call.
    pub fn take_episode_durations(&self) -> Vec<Duration> {
        std::mem::take(&mut self.lock().ended)
    }

    /// The phase now, without taking the lock.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Idle,
            1 => Phase::Buffering,
            _ => Phase::Draining,
        }
    }

    /// The current episode number, without taking the lock (changes with every
    /// buffering episode; sessions use it to re-check their backend).
    pub fn episode(&self) -> u64 {
        self.episode.load(Ordering::SeqCst)
    }

    /// Sessions executing a command or inside a transaction now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// The gate's state, as watched state.
    pub fn watch(&self) -> watch::Receiver<GateStatus> {
        self.tx.subscribe()
    }

    pub fn status(&self) -> GateStatus {
        let mut s = self.tx.borrow().clone();
        s.active = self.active();
        s
    }

    /// Pass the gate: at once when idle or draining; when buffering, wait in line
    /// until released (or fail with the reason the request was evicted).
    pub async fn admit(self: &Arc<Self>) -> Result<Admission, GateError> {
        if self.no_primary.load(Ordering::SeqCst) {
            return Err(GateError::NoPrimary);
        }
        // Fast path: idle. Counted as active first, then the phase re-checked, so a
        // reparent that announces meanwhile either sees us active or we see it.
        if self.phase.load(Ordering::SeqCst) == 0 {
            let mut throttle_permit = None;
            if self.throttled.load(Ordering::SeqCst) {
                let sem = self.throttle.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if let Some(sem) = sem {
                    // Closed when the throttle ends: then carry on as usual.
                    throttle_permit = sem.acquire_owned().await.ok();
                }
            }
            self.enter();
            if self.phase.load(Ordering::SeqCst) == 0 {
                return Ok(Admission { gate: self.clone(), _drain_permit: None, _throttle_permit: throttle_permit });
            }
            self.leave();
        }
        let limits = self.limits();
        let (id, rx) = {
            let mut evicted = None;
            let r = self.update(|i| match i.status.phase {
                Phase::Idle | Phase::Draining => {
                    self.enter();
                    None
                }
                Phase::Buffering => {
                    if i.queue.len() >= limits.size.max(1) {
                        evicted = i.queue.pop_front();
                    }
                    let id = i.next_id;
                    i.next_id += 1;
                    let (tx, rx) = oneshot::channel();
                    i.queue.push_back(Waiter { id, tx });
                    Some((id, rx))
                }
            });
            if let Some(w) = evicted {
                self.counters.evicted_full.fetch_add(1, Ordering::Relaxed);
                let _ = w.tx.send(Err(GateError::BufferFull));
            }
            match r {
                None => return Ok(Admission { gate: self.clone(), _drain_permit: None, _throttle_permit: None }),
                Some(x) => {
                    self.counters.buffered.fetch_add(1, Ordering::Relaxed);
                    x
                }
            }
        };
        let mut guard = WaitGuard { gate: self.clone(), id, client_gone: true };
        let result = tokio::time::timeout(limits.window, rx).await;
        match result {
            Ok(Ok(Ok(admission))) => {
                std::mem::forget(guard);
                Ok(admission)
            }
            Ok(Ok(Err(e))) => {
                std::mem::forget(guard);
                Err(e)
            }
            // The gate was dropped: treat as the episode failing.
            Ok(Err(_)) => {
                std::mem::forget(guard);
                Err(GateError::MaxDuration)
            }
            Err(_) => {
                guard.client_gone = false;
                drop(guard); // removes us from the queue
                self.counters.evicted_window.fetch_add(1, Ordering::Relaxed);
                Err(GateError::WindowExpired)
            }
        }
    }

    /// Slow writers down while the primary still serves: at most `concurrency`
    /// commands outside transactions at once (`None` ends it). A reparent uses it
    /// when the candidate cannot catch up with the live write load, so the write
    /// pause does not have to cover a long replication lag.
    pub fn set_throttle(&self, concurrency: Option<usize>) {
        let mut t = self.throttle.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = t.take() {
            old.close();
        }
        if let Some(n) = concurrency {
            *t = Some(Arc::new(Semaphore::new(n.max(1))));
        }
        self.throttled.store(t.is_some(), Ordering::SeqCst);
    }

    /// Begin buffering at topology term `term` with `old_primary` as the primary to
    /// revoke. A reactive episode (`planned == false`) is skipped when the previous
    /// episode ended less than `min_time_between_failovers` ago. Returns the episode
    /// number, or `None` if skipped.
    pub fn begin(&self, term: u64, old_primary: &str, reason: &str, planned: bool) -> Option<u64> {
        let min_gap = self.limits().min_time_between_failovers;
        if planned {
            self.set_throttle(None);
        }
        let r = self.update(|i| {
            if planned && i.status.no_primary.take().is_some() {
                // A reparent or failover: a primary may come after all.
                self.no_primary.store(false, Ordering::SeqCst);
            }
            if !planned && i.status.no_primary.is_some() {
                return None;
            }
            if i.status.phase == Phase::Buffering {
                if planned {
                    i.status.planned = true;
                    i.status.reason = reason.to_string();
                }
                return Some(i.status.episode);
            }
            if !planned && i.last_end.is_some_and(|t| t.elapsed() < min_gap) {
                return None;
            }
            i.status.phase = Phase::Buffering;
            i.status.episode += 1;
            self.counters.episodes.fetch_add(1, Ordering::Relaxed);
            self.set_throttle(None);
            i.status.start_term = term;
            i.status.old_primary = old_primary.to_string();
            i.status.reason = reason.to_string();
            i.status.planned = planned;
            i.status.since = Some(Instant::now());
            Some(i.status.episode)
        });
        match r {
            Some(ep) => {
                tracing::info!(episode = ep, term, old_primary, reason, "buffering");
            }
            None => {
                self.counters.skipped_too_recent.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }

    /// Release episode `episode` for `cause`: drain the held requests in FIFO
    /// order, `drain_concurrency` at a time, then go idle. False (nothing done)
    /// when the episode is over, or `cause` is [`Release::SuspicionCleared`] and
    /// a planned reparent or a failover has taken the episode over: checked under
    /// the same lock as [`Gate::begin`] marks it, so the two cannot interleave.
    pub fn release(self: &Arc<Self>, episode: u64, cause: Release) -> bool {
        let ok = self.update(|i| {
            let taken_over = cause == Release::SuspicionCleared && i.status.planned;
            if i.status.phase == Phase::Buffering && i.status.episode == episode && !taken_over {
                i.status.phase = Phase::Draining;
                i.status.last_release = Some(cause);
                i.ended_as(episode, Ok(cause));
                true
            } else {
                false
            }
        });
        if ok {
            tracing::info!(episode, ?cause, queued = self.status().queued, "draining");
            let gate = self.clone();
            tokio::spawn(async move { gate.drain(episode).await });
        }
        ok
    }

    async fn drain(self: Arc<Self>, episode: u64) {
        loop {
            let Ok(permit) = self.drain.clone().acquire_owned().await else { return };
            let next = self.update(|i| {
                if i.status.episode != episode || i.status.phase != Phase::Draining {
                    return Err(());
                }
                match i.queue.pop_front() {
                    Some(w) => {
                        self.enter();
                        Ok(Some(w))
                    }
                    None => {
                        i.status.phase = Phase::Idle;
                        i.last_end = Some(Instant::now());
                        if let Some(t) = i.status.since {
                            i.ended.push(t.elapsed());
                        }
                        Ok(None)
                    }
                }
            });
            match next {
                Err(()) => return,
                Ok(None) => {
                    tracing::info!(episode, "drained; idle");
                    return;
                }
                Ok(Some(w)) => {
                    let admission = Admission { gate: self.clone(), _drain_permit: Some(permit), _throttle_permit: None };
                    match w.tx.send(Ok(admission)) {
                        Ok(()) => {
                            self.counters.drained.fetch_add(1, Ordering::Relaxed);
                        }
                        // Dropped here: it leaves again.
                        Err(_) => {
                            self.counters.evicted_client_gone.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    }

    /// End episode `episode` without a new primary: every held request fails with
    /// `error` and the gate goes idle.
    pub fn fail(&self, episode: u64, error: GateError) -> usize {
        let waiters = self.update(|i| {
            if i.status.episode != episode || i.status.phase != Phase::Buffering {
                return Vec::new();
            }
            i.ended_as(episode, Err(error));
            i.status.phase = Phase::Idle;
            i.last_end = Some(Instant::now());
            if let Some(t) = i.status.since {
                i.ended.push(t.elapsed());
            }
            i.queue.drain(..).collect::<Vec<_>>()
        });
        let n = waiters.len();
        for w in waiters {
            if error == GateError::MaxDuration {
                self.counters.evicted_max_duration.fetch_add(1, Ordering::Relaxed);
            }
            let _ = w.tx.send(Err(error));
        }
        tracing::warn!(episode, failed = n, ?error, "buffering episode failed");
        n
    }

    /// No primary is coming (item 7 of issue 11: the named primary answers but
    /// cannot be re-established, and nothing else was promoted): fail the held
    /// requests of a reactive episode with [`GateError::NoPrimary`] now, rather
    /// than at the max failover duration, and answer new ones the same way at
    /// once, until [`Gate::primary_back`] or a reparent or failover begins.
    /// `why` is shown in the status. It applies to episode `episode` only while
    /// that episode is buffering (and is not a reparent's or failover's, unless
    /// `planned_ok`: the failover itself gave up), or, once set, to update the
    /// reason; otherwise (a failover began meanwhile) it does nothing, decided
    /// under the same lock as [`Gate::begin`]. Returns how many held requests failed.
    pub fn no_primary(&self, episode: u64, why: &str, planned_ok: bool) -> usize {
        let waiters = self.update(|i| {
            let buffering = i.status.phase == Phase::Buffering && i.status.episode == episode && (planned_ok || !i.status.planned);
            let already = i.status.phase != Phase::Buffering && i.status.no_primary.is_some();
            if !buffering && !already {
                return Vec::new();
            }
            if i.status.no_primary.as_deref() != Some(why) {
                tracing::warn!(why, "no primary is coming: requests fail at once (9109)");
            }
            i.status.no_primary = Some(why.to_string());
            self.no_primary.store(true, Ordering::SeqCst);
            if !buffering {
                return Vec::new();
            }
            i.ended_as(episode, Err(GateError::NoPrimary));
            i.status.phase = Phase::Idle;
            i.last_end = Some(Instant::now());
            if let Some(t) = i.status.since {
                i.ended.push(t.elapsed());
            }
            i.queue.drain(..).collect::<Vec<_>>()
        });
        let n = waiters.len();
        for w in waiters {
            let _ = w.tx.send(Err(GateError::NoPrimary));
        }
        n
    }

    /// The primary serves again (or another was established): requests pass.
    pub fn primary_back(&self) {
        if self.no_primary.load(Ordering::SeqCst) {
            self.update(|i| i.status.no_primary = None);
            self.no_primary.store(false, Ordering::SeqCst);
            tracing::info!("a primary serves again: requests pass");
        }
    }

    /// Wait until no session is active (executing or in a transaction), up to `timeout`.
    /// Returns the number still active.
    pub async fn wait_inactive(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inactive.notified();
            if self.active() == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.active();
            }
        }
    }
}

fn phase_code(p: Phase) -> u8 {
    match p {
        Phase::Idle => 0,
        Phase::Buffering => 1,
        Phase::Draining => 2,
    }
}

/// Removes a waiter from the queue if its request gives up (timeout, client gone).
struct WaitGuard {
    gate: Arc<Gate>,
    id: u64,
    /// Dropped because the caller stopped waiting (its client went away): counted
    /// as `client_gone`. False when the window expired (counted by the caller).
    client_gone: bool,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        let id = self.id;
        let removed = self.gate.update(|i| {
            let before = i.queue.len();
            i.queue.retain(|w| w.id != id);
            before != i.queue.len()
        });
        if removed && self.client_gone {
            self.gate.counters.evicted_client_gone.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> BufferLimits {
        BufferLimits {
            window: Duration::from_secs(5),
            size: 3,
            max_failover_duration: Duration::from_secs(5),
            min_time_between_failovers: Duration::from_secs(60),
            drain_concurrency: 1,
        }
    }

    #[tokio::test]
    async fn idle_passes_buffering_holds_release_drains_in_order() {
        let gate = Gate::new(limits());
        drop(gate.admit().await.unwrap());
        let ep = gate.begin(1, "a", "test", true).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for n in 0..3 {
            let (g, o) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let a = g.admit().await.unwrap();
                o.lock().unwrap().push(n);
                drop(a);
            }));
            let mut rx = gate.watch();
            rx.wait_for(|s| s.queued == n + 1).await.unwrap();
        }
        assert!(order.lock().unwrap().is_empty(), "nothing passes while buffering");
        assert!(gate.release(ep, Release::ConditionsHold));
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
        let c = &gate.counters;
        assert_eq!(c.buffered.load(Ordering::Relaxed), 3);
        assert_eq!(c.drained.load(Ordering::Relaxed), 3);
        let mut rx = gate.watch();
        rx.wait_for(|s| s.phase == Phase::Idle).await.unwrap();
        assert_eq!(gate.wait_inactive(Duration::from_secs(5)).await, 0);
    }

    #[tokio::test]
    async fn overflow_evicts_oldest_and_window_expires() {
        let mut l = limits();
        l.size = 1;
        l.window = Duration::from_millis(200);
        let gate = Gate::new(l);
        gate.begin(1, "a", "test", true).unwrap();
        let g = gate.clone();
        let first = tokio::spawn(async move { g.admit().await.err() });
        gate.watch().wait_for(|s| s.queued == 1).await.unwrap();
        let g = gate.clone();
        let second = tokio::spawn(async move { g.admit().await.err() });
        assert_eq!(first.await.unwrap(), Some(GateError::BufferFull));
        assert_eq!(second.await.unwrap(), Some(GateError::WindowExpired));
        assert_eq!(gate.status().queued, 0);
        let c = &gate.counters;
        assert_eq!(c.buffered.load(Ordering::Relaxed), 2);
        assert_eq!(c.evicted_full.load(Ordering::Relaxed) + c.evicted_window.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn throttle_limits_concurrency_and_announce_lifts_it() {
        let gate = Gate::new(limits());
        gate.set_throttle(Some(1));
        let first = gate.admit().await.unwrap();
        let g = gate.clone();
        let second = tokio::spawn(async move { g.admit().await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert!(!second.is_finished(), "a second command waits for the throttle");
        drop(first);
        second.await.unwrap().unwrap();
        let held = gate.admit().await.unwrap();
        let g = gate.clone();
        let waiting = tokio::spawn(async move { g.admit().await.map(|_| ()) });
        tokio::task::yield_now().await;
        let ep = gate.begin(1, "a", "planned", true).unwrap();
        gate.watch().wait_for(|s| s.queued == 1).await.unwrap();
        drop(held);
        gate.release(ep, Release::ConditionsHold);
        waiting.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn fail_ends_the_episode_and_reactive_respects_min_gap() {
        let gate = Gate::new(limits());
        let ep = gate.begin(1, "a", "reactive", false).unwrap();
        let g = gate.clone();
        let w = tokio::spawn(async move { g.admit().await.err() });
        gate.watch().wait_for(|s| s.queued == 1).await.unwrap();
        assert_eq!(gate.fail(ep, GateError::MaxDuration), 1);
        assert_eq!(w.await.unwrap(), Some(GateError::MaxDuration));
        assert_eq!(gate.status().phase, Phase::Idle);
        assert!(gate.begin(1, "a", "reactive", false).is_none(), "too soon after the last episode");
        assert!(gate.begin(1, "a", "planned", true).is_some(), "a planned reparent is not throttled");
    }

    #[tokio::test]
    async fn no_primary_fails_held_requests_at_once_until_a_primary_is_back() {
        let gate = Gate::new(BufferLimits {
            window: Duration::from_secs(30),
            size: 10,
            max_failover_duration: Duration::from_secs(30),
            min_time_between_failovers: Duration::ZERO,
            drain_concurrency: 2,
        });
        let ep = gate.begin(1, "a", "primary down", false).unwrap();
        let g = gate.clone();
        let held = tokio::spawn(async move { g.admit().await.map(|_| ()) });
        while gate.status().queued == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(gate.no_primary(ep + 1, "another episode", false), 0, "only for its own episode");
        assert!(gate.status().no_primary.is_none());
        assert_eq!(gate.no_primary(ep, "a is back read-only but lacks acknowledged writes", false), 1);
        assert_eq!(held.await.unwrap(), Err(GateError::NoPrimary));
        assert_eq!(gate.phase(), Phase::Idle);
        assert_eq!(gate.admit().await.map(|_| ()), Err(GateError::NoPrimary), "new requests fail at once");
        assert_eq!(gate.begin(1, "a", "1290", false), None, "no reactive episode while no primary is coming");
        gate.primary_back();
        assert!(gate.status().no_primary.is_none());
        assert!(gate.admit().await.is_ok());
        // A failover clears it too, and a late verdict on its episode is ignored.
        let ep = gate.begin(1, "a", "suspicion", false).unwrap();
        gate.no_primary(ep, "x", false);
        assert_eq!(gate.begin(1, "a", "failover", true), Some(ep + 1));
        assert!(gate.status().no_primary.is_none());
        assert_eq!(gate.no_primary(ep + 1, "late", false), 0, "a failover's episode is not the monitor's to end");
        assert!(gate.status().no_primary.is_none());
    }
}
