//! One reparent or failover as it runs: its typed steps, the report they fill
//! (published at every step, so `GET /api/v1/clusters/{name}` shows progress),
//! and the explicit cancel request an operator may make.
//!
//! The step names are the contract the report (`steps[].step`), the logs, the
//! metric `baton_reparent_step_duration_seconds{step}` and the README share:
//! [`Step::name`] is the only spelling.

use std::time::Instant;

use serde::Serialize;

use crate::cluster::ClusterHandle;

/// A step of a planned reparent or a failover, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Planned: the candidate catches up with the live primary (writers throttled if needed).
    Prepare,
    /// The gate holds new requests from here on.
    Announce,
    /// Planned: open transactions may finish (`transaction_grace_ms`).
    Grace,
    /// Planned, etcd: the other proxies confirm they hold their requests.
    Acks,
    /// The old primary made read-only, its client connections ended.
    Revoke,
    /// Failover: every replica's IO thread stopped (the old primary cannot reach a quorum).
    Fence,
    /// Failover: the replicas apply what they received.
    ApplyRelay,
    /// Failover: errant servers left out of the election.
    Exclude,
    /// Failover: the most advanced replica, containing every other and every acknowledged GTID.
    Elect,
    /// Planned: the candidate applies the old primary's final position.
    CatchUp,
    /// The new primary stops replicating and becomes writable.
    Promote,
    /// The topology names the new primary at term + 1.
    Publish,
    /// The other servers replicate from the new primary (IO and SQL threads running).
    Repoint,
    /// The supervisor finds every leadership condition holding and releases the gate.
    Verify,
    /// Before establishment: the old primary serves again at the same term.
    Undo,
    /// An operator's cancel request was taken.
    Cancel,
}

impl Step {
    /// Every step, in order (metrics register one histogram per step).
    pub const ALL: [Step; 16] = [
        Step::Prepare,
        Step::Announce,
        Step::Grace,
        Step::Acks,
        Step::Revoke,
        Step::Fence,
        Step::ApplyRelay,
        Step::Exclude,
        Step::Elect,
        Step::CatchUp,
        Step::Promote,
        Step::Publish,
        Step::Repoint,
        Step::Verify,
        Step::Undo,
        Step::Cancel,
    ];

    /// The step's name in reports, logs and metrics (snake_case).
    pub fn name(self) -> &'static str {
        match self {
            Step::Prepare => "prepare",
            Step::Announce => "announce",
            Step::Grace => "grace",
            Step::Acks => "acks",
            Step::Revoke => "revoke",
            Step::Fence => "fence",
            Step::ApplyRelay => "apply_relay",
            Step::Exclude => "exclude",
            Step::Elect => "elect",
            Step::CatchUp => "catch_up",
            Step::Promote => "promote",
            Step::Publish => "publish",
            Step::Repoint => "repoint",
            Step::Verify => "verify",
            Step::Undo => "undo",
            Step::Cancel => "cancel",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One step's outcome and duration.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub step: Step,
    pub ms: u64,
    pub detail: String,
}

/// How a reparent or failover ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// In progress.
    Running,
    /// Established, every condition held, the gate drained to the new primary.
    Ok,
    /// Failed (or cancelled) before establishment; the old primary serves again.
    Undone,
    /// Established (or past the point of undo), but not every condition held
    /// before the max failover duration: held requests failed with 9104.
    Held,
    /// A failover that promoted nothing (split brain, no candidate, lacking writes).
    Refused,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Ok => "ok",
            Outcome::Undone => "undone",
            Outcome::Held => "held",
            Outcome::Refused => "refused",
        }
    }
}

impl PartialEq<&str> for Outcome {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a reparent or failover did.
#[derive(Debug, Clone, Serialize)]
pub struct ReparentReport {
    pub cluster: String,
    pub outcome: Outcome,
    pub from: String,
    pub to: String,
    pub term: u64,
    pub steps: Vec<StepRecord>,
    pub error: Option<String>,
    pub total_ms: u64,
    /// Requests held by the gate during this reparent.
    pub buffered: u64,
    /// Servers that do not replicate from the new primary after the repoint
    /// step ("addr: why", with the server's own `Last_IO_Error`); empty when all do.
    pub not_following: Vec<String>,
    /// Whether an operator asked to cancel it (`POST .../reparent/cancel`).
    pub cancel_requested: bool,
}

/// Why a reparent was refused before it started, or a cancel request refused.
#[derive(Debug, thiserror::Error)]
pub enum ReparentError {
    #[error("a reparent of cluster {0} is already running")]
    AlreadyRunning(String),
    #[error("cluster {0} has no topology record")]
    NoRecord(String),
    #[error("{0}")]
    BadCandidate(String),
    #[error("no reparent or failover of cluster {0} is running")]
    NotRunning(String),
    #[error("the reparent of cluster {0} is past its {1} step: the new primary is established and cannot be undone; it runs to its end")]
    TooLate(String, Step),
}

/// The running procedure: its report, timing, and the cluster it acts on.
pub(crate) struct Run<'a> {
    pub(crate) report: ReparentReport,
    started: Instant,
    step_started: Instant,
    pub(crate) cluster: &'a ClusterHandle,
    buffered_before: u64,
}

impl<'a> Run<'a> {
    pub(crate) fn new(cluster: &'a ClusterHandle, from: &str, to: &str, term: u64) -> Run<'a> {
        let now = Instant::now();
        cluster.cancel.clear();
        let run = Run {
            report: ReparentReport {
                cluster: cluster.name.clone(),
                outcome: Outcome::Running,
                from: from.to_string(),
                to: to.to_string(),
                term,
                steps: Vec::new(),
                error: None,
                total_ms: 0,
                buffered: 0,
                not_following: Vec::new(),
                cancel_requested: false,
            },
            started: now,
            step_started: now,
            cluster,
            buffered_before: cluster.gate.counters.buffered.load(std::sync::atomic::Ordering::Relaxed),
        };
        run.publish();
        run
    }

    /// Record `step` as done with `detail` (logged, published).
    pub(crate) fn step(&mut self, step: Step, detail: impl Into<String>) {
        let detail = detail.into();
        let ms = self.step_started.elapsed().as_millis() as u64;
        tracing::info!(cluster = %self.cluster.name, step = step.name(), ms, %detail, "reparent step");
        self.report.steps.push(StepRecord { step, ms, detail });
        self.step_started = Instant::now();
        self.publish();
    }

    /// Whether an operator asked to cancel (checked between the steps that can be undone).
    pub(crate) fn cancel_requested(&mut self) -> bool {
        let asked = self.cluster.cancel.requested();
        if asked && !self.report.cancel_requested {
            self.report.cancel_requested = true;
            self.step(Step::Cancel, "cancel requested by an operator: undoing");
        }
        asked
    }

    /// One decision, under the switch's lock: cancel now (true: a request came;
    /// recorded as the `cancel` step), or close the switch so that a request from
    /// here on is refused as too late (the procedure is past `step`'s point of
    /// no return).
    pub(crate) fn cancel_or_close(&mut self, step: Step) -> bool {
        if self.cluster.cancel.take_or_close(step) {
            if !self.report.cancel_requested {
                self.report.cancel_requested = true;
                self.step(Step::Cancel, "cancel requested by an operator: undoing");
            }
            return true;
        }
        false
    }

    fn publish(&self) {
        *self.cluster.last_reparent.lock().unwrap_or_else(|p| p.into_inner()) = Some(self.report.clone());
    }

    pub(crate) fn finish(mut self, outcome: Outcome, error: Option<String>) -> ReparentReport {
        self.report.outcome = outcome;
        self.report.error = error;
        self.report.total_ms = self.started.elapsed().as_millis() as u64;
        self.report.buffered = self.cluster.gate.counters.buffered.load(std::sync::atomic::Ordering::Relaxed) - self.buffered_before;
        self.cluster.cancel.done();
        self.publish();
        self.report
    }
}

/// A cluster's cancel switch for the procedure in progress.
#[derive(Default)]
pub struct CancelSwitch {
    inner: std::sync::Mutex<CancelState>,
}

#[derive(Default)]
struct CancelState {
    /// A procedure is running and may still be undone.
    open: bool,
    requested: bool,
    /// The step after which it can no longer be undone (when closed by one).
    closed_at: Option<Step>,
}

impl CancelSwitch {
    fn lock(&self) -> std::sync::MutexGuard<'_, CancelState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn clear(&self) {
        *self.lock() = CancelState { open: true, requested: false, closed_at: None };
    }

    fn requested(&self) -> bool {
        let s = self.lock();
        s.open && s.requested
    }

    fn take_or_close(&self, at: Step) -> bool {
        let mut s = self.lock();
        if s.open && s.requested {
            return true;
        }
        if s.open {
            s.open = false;
            s.closed_at = Some(at);
        }
        false
    }

    fn done(&self) {
        *self.lock() = CancelState::default();
    }

    /// Ask the running procedure of `cluster` to stop and undo. Err: nothing is
    /// running, or it is past the step where undo is possible.
    pub fn request(&self, cluster: &str) -> Result<(), ReparentError> {
        let mut s = self.lock();
        match (s.open, s.closed_at) {
            (true, _) => {
                s.requested = true;
                Ok(())
            }
            (false, Some(step)) => Err(ReparentError::TooLate(cluster.to_string(), step)),
            _ => Err(ReparentError::NotRunning(cluster.to_string())),
        }
    }
}
