//! Prometheus metrics: every name a documented constant (prefix `baton_`, `_total`
//! for counters, units in the name), labels from closed sets only (command kinds,
//! error classes, configured cluster names, reasons, steps; never SQL text).
//!
//! Each baton instance owns its recorder (no global): tests running several
//! instances in one process do not share counters.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::cluster::Registry;

/// Gauge: client sessions open now.
pub const CLIENT_CONNECTIONS: &str = "baton_client_connections";
/// Counter: client connections accepted.
pub const CLIENT_CONNECTIONS_TOTAL: &str = "baton_client_connections_total";
/// Counter, label `command` (query, stmt_execute, stmt_prepare, ..., other): commands received.
pub const QUERIES_TOTAL: &str = "baton_queries_total";
/// Histogram (seconds): from a command's arrival to the end of its response, buffering included.
pub const QUERY_DURATION_SECONDS: &str = "baton_query_duration_seconds";
/// Counter, label `class` (connect, lost, read_only): backend failures seen by the data path.
pub const BACKEND_ERRORS_TOTAL: &str = "baton_backend_errors_total";
/// Counter, label `cluster`: requests that entered the buffer.
pub const BUFFER_BUFFERED_TOTAL: &str = "baton_buffer_requests_buffered_total";
/// Counter, label `cluster`: held requests released to a primary.
pub const BUFFER_DRAINED_TOTAL: &str = "baton_buffer_requests_drained_total";
/// Counter, labels `cluster`, `reason` (buffer_full, window_expired, max_duration, client_gone):
/// held requests that were not executed.
pub const BUFFER_EVICTED_TOTAL: &str = "baton_buffer_requests_evicted_total";
/// Counter, labels `cluster`, `reason` (last_failover_too_recent): reactive episodes not started.
pub const BUFFER_SKIPPED_TOTAL: &str = "baton_buffer_requests_skipped_total";
/// Gauge, label `cluster`: requests held now. Invariant: buffered = drained + evicted + queued.
pub const BUFFER_QUEUED: &str = "baton_buffer_requests_queued";
/// Counter, label `cluster`: buffering episodes begun.
pub const BUFFER_EPISODES_TOTAL: &str = "baton_buffer_episodes_total";
/// Histogram (seconds), label `cluster`: how long buffering episodes lasted.
pub const BUFFER_EPISODE_DURATION_SECONDS: &str = "baton_buffer_episode_duration_seconds";
/// Counter, labels `cluster`, `kind` (planned, emergency), `result` (ok, undone, held, refused): reparents.
pub const REPARENTS_TOTAL: &str = "baton_reparents_total";
/// Histogram (seconds), label `step`: duration of each reparent step.
pub const REPARENT_STEP_DURATION_SECONDS: &str = "baton_reparent_step_duration_seconds";
/// Gauge 0/1, labels `cluster`, `condition` (C1_revoked ... C5_durable): the latest evaluation.
pub const LEADERSHIP_CONDITION: &str = "baton_leadership_condition";
/// Gauge, label `cluster`: the topology term.
pub const CLUSTER_TERM: &str = "baton_cluster_term";
/// Gauge 0/1: the topology store answers (always 1 on the file store; 0 while etcd is unreachable).
pub const TOPOLOGY_STORE_UP: &str = "baton_topology_store_up";
/// Gauge 0/1: this proxy holds the orchestrator role (always 1 on the file store).
pub const ORCHESTRATOR: &str = "baton_orchestrator";
/// Gauge, per cluster: servers whose GTID history is not contained in the
/// primary's (kept out of rejoin and elections until repaired; README "Errant servers").
pub const ERRANT_SERVERS: &str = "baton_errant_servers";
/// Counter, label `cluster`: transactions cut by a reparent or a crash whose replay began.
pub const REPLAYS_TOTAL: &str = "baton_transaction_replays_total";
/// Counter, label `cluster`: replays that finished, the client's statement going on on the new primary.
pub const REPLAYS_SUCCEEDED_TOTAL: &str = "baton_transaction_replays_succeeded_total";
/// Counter, labels `cluster`, `reason` (checksum, size, timeout, commit_unknown, unsupported):
/// cut transactions not finished on the new primary.
pub const REPLAYS_FAILED_TOTAL: &str = "baton_transaction_replays_failed_total";
/// Gauge, per cluster: servers the last reparent or failover could not get to
/// replicate from the new primary (its report's `not_following`).
pub const REPLICAS_NOT_FOLLOWING: &str = "baton_replicas_not_following";

/// How often histogram samples are folded into buckets (bounds the memory they take
/// between scrapes: without it, every query's duration is kept until the next scrape).
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// (name, kind: c=counter g=gauge h=histogram, help) of every metric.
const DESCRIPTIONS: &[(&str, char, &str)] = &[
    (CLIENT_CONNECTIONS, 'g', "Client sessions open now."),
    (CLIENT_CONNECTIONS_TOTAL, 'c', "Client connections accepted."),
    (QUERIES_TOTAL, 'c', "Commands received, by command."),
    (QUERY_DURATION_SECONDS, 'h', "Command duration from arrival to the end of its response, buffering included."),
    (BACKEND_ERRORS_TOTAL, 'c', "Backend failures seen by the data path, by class."),
    (BUFFER_BUFFERED_TOTAL, 'c', "Requests that entered the buffer."),
    (BUFFER_DRAINED_TOTAL, 'c', "Held requests released to a primary."),
    (BUFFER_EVICTED_TOTAL, 'c', "Held requests not executed, by reason."),
    (BUFFER_SKIPPED_TOTAL, 'c', "Reactive buffering episodes not started, by reason."),
    (BUFFER_QUEUED, 'g', "Requests held now."),
    (BUFFER_EPISODES_TOTAL, 'c', "Buffering episodes begun."),
    (BUFFER_EPISODE_DURATION_SECONDS, 'h', "Duration of ended buffering episodes."),
    (REPARENTS_TOTAL, 'c', "Reparents, by kind and result."),
    (REPARENT_STEP_DURATION_SECONDS, 'h', "Duration of each reparent step."),
    (LEADERSHIP_CONDITION, 'g', "Latest evaluation of each leadership condition (1 holds, 0 does not)."),
    (CLUSTER_TERM, 'g', "The cluster's topology term."),
    (TOPOLOGY_STORE_UP, 'g', "1 while the topology store answers."),
    (ORCHESTRATOR, 'g', "1 while this proxy holds the orchestrator role."),
    (ERRANT_SERVERS, 'g', "Servers whose GTID history is not contained in the primary's."),
    (REPLICAS_NOT_FOLLOWING, 'g', "Servers not replicating from the new primary after the last reparent or failover."),
    (REPLAYS_TOTAL, 'c', "Transactions cut by a reparent or a crash whose replay began."),
    (REPLAYS_SUCCEEDED_TOTAL, 'c', "Replayed transactions that went on on the new primary."),
    (REPLAYS_FAILED_TOTAL, 'c', "Cut transactions not finished on the new primary, by reason."),
];

/// Command labels (closed set).
pub const COMMANDS: &[&str] = &[
    "quit",
    "init_db",
    "query",
    "field_list",
    "statistics",
    "process_kill",
    "ping",
    "change_user",
    "stmt_prepare",
    "stmt_execute",
    "stmt_send_long_data",
    "stmt_close",
    "stmt_reset",
    "set_option",
    "stmt_fetch",
    "reset_connection",
    "other",
];

fn command_label(code: u8) -> usize {
    let name = match code {
        0x01 => "quit",
        0x02 => "init_db",
        0x03 => "query",
        0x04 => "field_list",
        0x09 => "statistics",
        0x0c => "process_kill",
        0x0e => "ping",
        0x11 => "change_user",
        0x16 => "stmt_prepare",
        0x17 => "stmt_execute",
        0x18 => "stmt_send_long_data",
        0x19 => "stmt_close",
        0x1a => "stmt_reset",
        0x1b => "set_option",
        0x1c => "stmt_fetch",
        0x1f => "reset_connection",
        _ => "other",
    };
    COMMANDS.iter().position(|c| *c == name).unwrap_or(COMMANDS.len() - 1)
}

/// Backend error classes (closed set).
#[derive(Debug, Clone, Copy)]
pub enum BackendErrorClass {
    Connect = 0,
    Lost = 1,
    ReadOnly = 2,
}

const RESULTS: &[&str] = &["ok", "undone", "held", "refused"];

struct ClusterMetrics {
    buffered: Counter,
    drained: Counter,
    evicted: [Counter; 4],
    skipped: Counter,
    queued: Gauge,
    episodes: Counter,
    episode_duration: Histogram,
    reparents: HashMap<(&'static str, &'static str), Counter>,
    conditions: [Gauge; 5],
    term: Gauge,
    errant: Gauge,
    not_following: Gauge,
    replays: Counter,
    replays_succeeded: Counter,
    replays_failed: Vec<Counter>,
}

/// One instance's metrics.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    pub client_connections: Gauge,
    pub client_connections_total: Counter,
    queries: Vec<Counter>,
    pub query_duration: Histogram,
    backend_errors: [Counter; 3],
    steps: HashMap<&'static str, Histogram>,
    clusters: HashMap<String, ClusterMetrics>,
    store_up: Gauge,
    orchestrator: Gauge,
}

static META: Metadata<'static> = Metadata::new("baton", metrics::Level::INFO, Some("baton"));

impl Metrics {
    pub fn new(cluster_names: &[String]) -> Metrics {
        let buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        let recorder =
            PrometheusBuilder::new().set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets).expect("buckets").build_recorder();
        let handle = recorder.handle();
        for (name, kind, help) in DESCRIPTIONS {
            let (name, help) = (metrics::KeyName::from_const_str(name), metrics::SharedString::const_str(help));
            match kind {
                'c' => recorder.describe_counter(name, None, help),
                'g' => recorder.describe_gauge(name, None, help),
                _ => recorder.describe_histogram(name, None, help),
            }
        }
        let key = |name: &'static str, labels: &[(&'static str, String)]| {
            Key::from_parts(name, labels.iter().map(|(k, v)| Label::new(*k, v.clone())).collect::<Vec<_>>())
        };
        let counter = |name, labels: &[(&'static str, String)]| recorder.register_counter(&key(name, labels), &META);
        let gauge = |name, labels: &[(&'static str, String)]| recorder.register_gauge(&key(name, labels), &META);
        let histogram = |name, labels: &[(&'static str, String)]| recorder.register_histogram(&key(name, labels), &META);
        let mut clusters = HashMap::new();
        for c in cluster_names {
            let l = |extra: &[(&'static str, &str)]| {
                let mut v = vec![("cluster", c.clone())];
                v.extend(extra.iter().map(|(k, x)| (*k, x.to_string())));
                v
            };
            let cm = ClusterMetrics {
                buffered: counter(BUFFER_BUFFERED_TOTAL, &l(&[])),
                drained: counter(BUFFER_DRAINED_TOTAL, &l(&[])),
                evicted: ["buffer_full", "window_expired", "max_duration", "client_gone"]
                    .map(|r| counter(BUFFER_EVICTED_TOTAL, &l(&[("reason", r)]))),
                skipped: counter(BUFFER_SKIPPED_TOTAL, &l(&[("reason", "last_failover_too_recent")])),
                queued: gauge(BUFFER_QUEUED, &l(&[])),
                episodes: counter(BUFFER_EPISODES_TOTAL, &l(&[])),
                episode_duration: histogram(BUFFER_EPISODE_DURATION_SECONDS, &l(&[])),
                reparents: RESULTS
                    .iter()
                    .flat_map(|r| ["planned", "emergency"].map(|k| ((k, *r), counter(REPARENTS_TOTAL, &l(&[("kind", k), ("result", r)])))))
                    .collect(),
                conditions: ["C1_revoked", "C2_named", "C3_writable", "C4_caught_up", "C5_durable"]
                    .map(|n| gauge(LEADERSHIP_CONDITION, &l(&[("condition", n)]))),
                term: gauge(CLUSTER_TERM, &l(&[])),
                errant: gauge(ERRANT_SERVERS, &l(&[])),
                not_following: gauge(REPLICAS_NOT_FOLLOWING, &l(&[])),
                replays: counter(REPLAYS_TOTAL, &l(&[])),
                replays_succeeded: counter(REPLAYS_SUCCEEDED_TOTAL, &l(&[])),
                replays_failed: crate::replay::ReplayFailure::ALL
                    .iter()
                    .map(|f| counter(REPLAYS_FAILED_TOTAL, &l(&[("reason", f.name())])))
                    .collect(),
            };
            clusters.insert(c.clone(), cm);
        }
        Metrics {
            client_connections: gauge(CLIENT_CONNECTIONS, &[]),
            client_connections_total: counter(CLIENT_CONNECTIONS_TOTAL, &[]),
            queries: COMMANDS.iter().map(|c| counter(QUERIES_TOTAL, &[("command", c.to_string())])).collect(),
            query_duration: histogram(QUERY_DURATION_SECONDS, &[]),
            backend_errors: ["connect", "lost", "read_only"].map(|c| counter(BACKEND_ERRORS_TOTAL, &[("class", c.to_string())])),
            steps: crate::run::Step::ALL
                .iter()
                .map(|s| (s.name(), histogram(REPARENT_STEP_DURATION_SECONDS, &[("step", s.name().to_string())])))
                .collect(),
            clusters,
            store_up: gauge(TOPOLOGY_STORE_UP, &[]),
            orchestrator: gauge(ORCHESTRATOR, &[]),
            recorder,
            handle,
        }
    }

    /// Count one command by its command byte.
    pub fn query(&self, code: u8) {
        self.queries[command_label(code)].increment(1);
    }

    pub fn backend_error(&self, class: BackendErrorClass) {
        self.backend_errors[class as usize].increment(1);
    }

    /// Record a finished planned reparent.
    pub fn reparent(&self, cluster: &str, result: &str, steps: &[(String, u64)]) {
        self.record_reparent(cluster, "planned", result, steps);
    }

    /// Record a finished emergency reparent.
    pub fn failover(&self, cluster: &str, result: &str, steps: &[(String, u64)]) {
        self.record_reparent(cluster, "emergency", result, steps);
    }

    fn record_reparent(&self, cluster: &str, kind: &'static str, result: &str, steps: &[(String, u64)]) {
        if let Some(c) = self.clusters.get(cluster) {
            if let Some(counter) = RESULTS.iter().find(|r| **r == result).and_then(|r| c.reparents.get(&(kind, *r))) {
                counter.increment(1);
            }
        }
        for (step, ms) in steps {
            if let Some(h) = self.steps.get(step.as_str()) {
                h.record(Duration::from_millis(*ms).as_secs_f64());
            }
        }
    }

    /// Fold the samples histograms collected since the last call into their buckets.
    /// The exporter keeps every sample until then, so this must run periodically
    /// (not only when scraped): [`UPKEEP_INTERVAL`].
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Render the exposition text, after copying the control plane's state in.
    pub fn render(&self, clusters: &Registry, store: &crate::store::Store) -> String {
        let topo = store.current();
        let terms: HashMap<&String, u64> = topo.clusters.iter().map(|(n, r)| (n, r.term)).collect();
        self.store_up.set(if store.degraded().is_none() { 1.0 } else { 0.0 });
        self.orchestrator.set(if store.is_orchestrator() { 1.0 } else { 0.0 });
        for (name, cm) in &self.clusters {
            let Some(h) = clusters.get(name) else { continue };
            let c = &h.gate.counters;
            cm.buffered.absolute(c.buffered.load(Ordering::Relaxed));
            cm.drained.absolute(c.drained.load(Ordering::Relaxed));
            cm.evicted[0].absolute(c.evicted_full.load(Ordering::Relaxed));
            cm.evicted[1].absolute(c.evicted_window.load(Ordering::Relaxed));
            cm.evicted[2].absolute(c.evicted_max_duration.load(Ordering::Relaxed));
            cm.evicted[3].absolute(c.evicted_client_gone.load(Ordering::Relaxed));
            cm.skipped.absolute(c.skipped_too_recent.load(Ordering::Relaxed));
            cm.episodes.absolute(c.episodes.load(Ordering::Relaxed));
            cm.queued.set(h.gate.status().queued as f64);
            for d in h.gate.take_episode_durations() {
                cm.episode_duration.record(d.as_secs_f64());
            }
            let report = h.conditions.borrow().clone();
            for (i, id) in ["C1", "C2", "C3", "C4", "C5"].iter().enumerate() {
                let holds = report.conditions.iter().find(|c| c.id == *id).map(|c| c.holds).unwrap_or(true);
                cm.conditions[i].set(if holds { 1.0 } else { 0.0 });
            }
            if let Some(t) = terms.get(name) {
                cm.term.set(*t as f64);
            }
            cm.errant.set(h.health.lock().unwrap_or_else(|p| p.into_inner()).errant.len() as f64);
            let not_following = h.last_reparent.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map_or(0, |r| r.not_following.len());
            cm.not_following.set(not_following as f64);
            let r = h.replay.stats();
            cm.replays.absolute(r.started);
            cm.replays_succeeded.absolute(r.succeeded);
            for (c, f) in cm.replays_failed.iter().zip(crate::replay::ReplayFailure::ALL) {
                c.absolute(r.failed.get(f.name()).copied().unwrap_or(0));
            }
        }
        self.handle.run_upkeep();
        let _ = &self.recorder;
        self.handle.render()
    }
}
