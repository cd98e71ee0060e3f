//! MariaDB GTID positions, and the GTIDs baton acknowledged to clients per cluster
//! (the highest sequence number per replication domain). A new primary must
//! contain every acknowledged GTID before the buffer may drain to it (condition C4).

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Highest acknowledged GTID per domain: domain -> (server_id, seq_no).
#[derive(Debug, Default)]
pub struct AckedGtids {
    inner: Mutex<BTreeMap<u32, (u32, u64)>>,
}

impl AckedGtids {
    /// Record a MariaDB GTID list such as `0-1-42` or `0-1-42,1-2-7`.
    /// Malformed entries are ignored.
    pub fn record(&self, text: &[u8]) {
        let Ok(text) = std::str::from_utf8(text) else { return };
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for gtid in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if let Some((d, s, n)) = parse_gtid(gtid) {
                let e = map.entry(d).or_insert((s, n));
                if n > e.1 {
                    *e = (s, n);
                }
            }
        }
    }

    /// The highest acknowledged sequence number per domain (domain -> seq_no).
    pub fn floor(&self) -> BTreeMap<u32, u64> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(d, (_, n))| (*d, *n)).collect()
    }

    /// The acknowledged position as a MariaDB GTID list (`d-s-n,...`).
    pub fn position(&self) -> String {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(d, (s, n))| format!("{d}-{s}-{n}")).collect::<Vec<_>>().join(",")
    }
}

/// Is a commit sent to the server `server_id` provably absent from a history
/// whose `@@gtid_binlog_state` is `state`? `floor` is the highest sequence number
/// per domain already acknowledged (committed) when the COMMIT was sent: had
/// it committed, its GTID (d, server_id, n) would have n above that floor, for
/// a server numbers a domain's transactions in commit order (MariaDB GTID,
/// <https://mariadb.com/kb/en/gtid/>). The binlog state keeps the last
/// sequence number per (domain, server), so it is absent when every entry of
/// `server_id` is at or below the floor. Err: why it cannot be told (a later
/// transaction of that server is there: it may be this commit).
pub fn commit_absent(state: &str, server_id: u32, floor: &BTreeMap<u32, u64>) -> Result<(), String> {
    for (d, s, n) in state.split(',').filter_map(|g| parse_gtid(g.trim())) {
        if s == server_id {
            let f = floor.get(&d).copied().unwrap_or(0);
            if n > f {
                return Err(format!("the new primary has {d}-{s}-{n} from that server, after {d}-?-{f} acknowledged before the COMMIT"));
            }
        }
    }
    Ok(())
}

/// Does a server whose `@@gtid_binlog_state` is `state` contain every GTID of
/// `other` (a position or a state, `d-s-n,...`)? The binlog state keeps the last
/// sequence number of every (domain, server) pair, so the check is exact: for each
/// (d, s, n) of `other`, the state must have (d, s) at n or later. A transaction
/// that only `other` has (an errant one, or the other side of a split brain) is
/// missing even when `state` has higher sequence numbers from other servers.
/// Returns the first missing GTID as the reason when it does not.
pub fn contains(state: &str, other: &str) -> Result<(), String> {
    let have = streams(state);
    for g in other.split(',').filter(|g| !g.trim().is_empty()) {
        let Some((d, s, n)) = parse_gtid(g.trim()) else { continue };
        match have.get(&(d, s)) {
            Some(&m) if m >= n => {}
            Some(&m) => return Err(format!("has {d}-{s}-{m}, lacks {d}-{s}-{n}")),
            None => return Err(format!("has nothing from server {s} in domain {d}, lacks {d}-{s}-{n}")),
        }
    }
    Ok(())
}

/// Is a server (binlog state `state`, `@@server_id` = `own_id`) errant with
/// respect to a primary that has `history` (its binlog state and gtid_slave_pos)?
///
/// Errant: the server has a transaction the primary lacks. Decided per domain
/// by the server's latest GTID there (its highest seq_no): under
/// `gtid_strict_mode` a server's history in a domain is one chain, and an errant
/// transaction stops its replication in that domain (error 1950, out-of-order
/// sequence number), so it stays the latest unless an operator skips past the
/// stop (the health monitor keeps a finding for that: [`still_errant`]); older
/// entries are in the history that led to it. The latest is lacking when the
/// primary has its server's stream only to a lower seq_no; or has none of it and
/// it is this server's own (a write made on it, or an old primary's last commit
/// nobody received); or has none of it and is not that far in the domain.
/// A stream the primary has none of is otherwise history its binlog no longer
/// keeps (`RESET MASTER` when it was rebuilt, seeded by `gtid_slave_pos`),
/// including this server's own older entries. Other entries are still checked
/// against a stream the primary has further back (a cheap check of the chain).
pub fn errant(history: &str, state: &str, own_id: Option<u32>) -> Result<(), String> {
    let have = streams(history);
    let mut reach: BTreeMap<u32, u64> = BTreeMap::new();
    for (&(d, _), &n) in &have {
        let r = reach.entry(d).or_insert(n);
        *r = (*r).max(n);
    }
    let entries: Vec<(u32, u32, u64)> = state.split(',').filter_map(|g| parse_gtid(g.trim())).collect();
    let latest = latest(state);
    for &(d, s, n) in &entries {
        match have.get(&(d, s)) {
            Some(&m) if m >= n => {}
            Some(&m) => return Err(format!("has {d}-{s}-{m}, lacks {d}-{s}-{n}")),
            None if latest.get(&d) != Some(&(s, n)) => {}
            None if Some(s) == own_id => return Err(format!("has nothing from server {s} (this server) in domain {d}, lacks {d}-{s}-{n}")),
            None => match reach.get(&d) {
                Some(&r) if r >= n => {}
                r => return Err(format!("reaches {d}-*-{}, lacks {d}-{s}-{n}", r.copied().unwrap_or(0))),
            },
        }
    }
    Ok(())
}

/// The highest seq_no per (domain, server_id) in a GTID list or binlog state.
fn streams(text: &str) -> BTreeMap<(u32, u32), u64> {
    let mut have: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    for (d, s, n) in text.split(',').filter_map(|g| parse_gtid(g.trim())) {
        let e = have.entry((d, s)).or_insert(n);
        *e = (*e).max(n);
    }
    have
}

/// The latest GTID per domain of a binlog state: domain -> (server_id, seq_no).
fn latest(state: &str) -> BTreeMap<u32, (u32, u64)> {
    let mut out: BTreeMap<u32, (u32, u64)> = BTreeMap::new();
    for (d, s, n) in state.split(',').filter_map(|g| parse_gtid(g.trim())) {
        let l = out.entry(d).or_insert((s, n));
        if n > l.1 {
            *l = (s, n);
        }
    }
    out
}

/// A domain where a server's latest GTID (binlog state `state`) is its own
/// (`own_id`) and `history` lacks it: a transaction it wrote itself that nobody
/// else got (an old primary's last commit, a write made on it). Returns it.
pub fn own_latest_lacked(history: &str, state: &str, own_id: Option<u32>) -> Option<(u32, u32, u64)> {
    let own = own_id?;
    let have = streams(history);
    latest(state).into_iter().find(|(d, (s, n))| *s == own && have.get(&(*d, *s)).is_none_or(|m| m < n)).map(|(d, (s, n))| (d, s, n))
}

/// Is a server's latest GTID in `domain` its own?
pub fn latest_is_own(state: &str, own_id: Option<u32>, domain: u32) -> bool {
    own_id.is_some_and(|own| latest(state).get(&domain).is_some_and(|(s, _)| *s == own))
}

/// The GTID an [`errant`] finding names: each of its reasons (and a health
/// entry "addr: reason") ends with "lacks D-S-N".
pub fn lacked(why: &str) -> Option<(u32, u32, u64)> {
    why.rsplit_once("lacks ").and_then(|(_, g)| parse_gtid(g.trim()))
}

/// Does a server (binlog state `state`) still have the transaction `g` that a
/// primary with `history` lacks? (What keeps an errant finding: see `health`.)
pub fn still_errant(history: &str, state: &str, g: (u32, u32, u64)) -> bool {
    let (d, s, n) = g;
    let max = |text: &str| text.split(',').filter_map(|x| parse_gtid(x.trim())).filter(|x| x.0 == d && x.1 == s).map(|x| x.2).max();
    max(state).is_some_and(|m| m >= n) && max(history).is_none_or(|m| m < n)
}

/// A total order for picking the most advanced server: the sum of seq_nos.
pub fn advance(position: &str) -> u64 {
    position.split(',').filter_map(|g| parse_gtid(g.trim())).map(|g| g.2).sum()
}

/// Parse one `domain-server-seq` GTID.
pub fn parse_gtid(s: &str) -> Option<(u32, u32, u64)> {
    let mut it = s.split('-');
    let d = it.next()?.parse().ok()?;
    let srv = it.next()?.parse().ok()?;
    let n = it.next()?.parse().ok()?;
    it.next().is_none().then_some((d, srv, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_is_absent_only_when_nothing_of_its_server_follows_the_floor() {
        let floor: BTreeMap<u32, u64> = [(0, 100)].into();
        // The new primary (server 2) has the old primary's (1) stream up to 100 and its own after.
        assert!(commit_absent("0-1-100,0-2-140", 1, &floor).is_ok());
        assert!(commit_absent("0-1-99", 1, &floor).is_ok());
        // Server 1 committed something after the floor: maybe this COMMIT.
        assert!(commit_absent("0-1-101,0-2-140", 1, &floor).is_err());
        // A domain with nothing acknowledged: any entry of that server may be it.
        assert!(commit_absent("0-1-100,5-1-1", 1, &floor).is_err());
        assert!(commit_absent("", 1, &floor).is_ok());
    }

    #[test]
    fn keeps_the_highest_per_domain() {
        let g = AckedGtids::default();
        g.record(b"0-1-5");
        g.record(b"0-2-3,1-1-9");
        g.record(b"0-2-8");
        g.record(b"garbage,0-x-1,");
        assert_eq!(g.position(), "0-2-8,1-1-9");
    }

    #[test]
    fn containment_uses_the_binlog_state() {
        // State: server 1 wrote up to 10, then server 2 (after a failover) up to 15.
        let state = "0-1-10,0-2-15,1-1-3";
        assert!(contains(state, "0-2-8,1-1-3").is_ok());
        assert!(contains(state, "0-1-10").is_ok());
        assert!(contains(state, "0-1-11").unwrap_err().contains("lacks 0-1-11"), "an errant transaction of the old primary");
        assert!(contains(state, "0-3-5").unwrap_err().contains("nothing from server 3"));
        assert!(contains("", "").is_ok());
    }

    #[test]
    fn errant_tells_lost_history_from_a_servers_own_transactions() {
        // The primary (server 3) was rebuilt: its binlog has nothing from server 1.
        let primary = "0-3-500,0-2-400";
        assert!(errant(primary, "0-1-100,0-2-400,0-3-499", Some(2)).is_ok(), "history the primary's binlog lost");
        assert!(errant(primary, "0-2-401", Some(2)).unwrap_err().contains("lacks 0-2-401"), "a write made on server 2");
        assert!(errant("0-3-500", "0-5-7", Some(5)).unwrap_err().contains("this server"), "a replica's own write");
        assert!(errant(primary, "0-3-501", Some(2)).unwrap_err().contains("lacks 0-3-501"), "an old primary's last commit");
    }

    #[test]
    fn a_servers_own_last_transaction_nobody_got_is_told_from_being_ahead() {
        // Chaos run: server 3, an old primary, restarted with 0-3-689027 nobody got.
        assert_eq!(own_latest_lacked("0-3-689026,0-2-693791", "0-3-689027", Some(3)), Some((0, 3, 689027)));
        // A replica ahead with the dead primary's stream is not its own.
        assert_eq!(own_latest_lacked("0-3-100", "0-3-101", Some(1)), None);
        // Contained: nothing.
        assert_eq!(own_latest_lacked("0-3-101", "0-3-101", Some(3)), None);
        assert!(latest_is_own("0-1-5,0-2-9", Some(2), 0) && !latest_is_own("0-1-5,0-2-9", Some(1), 0));
    }

    #[test]
    fn an_errant_finding_is_kept_while_the_server_has_it_and_the_primary_lacks_it() {
        // Replica 5's write 0-5-51 stopped it (1950); an operator skipped 0-1-51 and
        // started it again: the write is no longer its latest, so errant() misses it.
        assert!(errant("0-1-100", "0-1-100,0-5-51", Some(5)).is_ok());
        let g = lacked("127.0.0.1:3306: has nothing from server 5 (this server) in domain 0, lacks 0-5-51").unwrap();
        assert_eq!(g, (0, 5, 51));
        assert!(still_errant("0-1-100", "0-1-100,0-5-51", g), "still has it, the primary still lacks it");
        assert!(!still_errant("0-1-100", "0-1-100", g), "rebuilt: its binlog no longer has it");
        assert!(!still_errant("0-1-100,0-5-51", "0-1-100,0-5-51", g), "the primary has it now");
        for why in ["has 0-2-3, lacks 0-2-4", "reaches 0-*-9, lacks 0-4-10", "has nothing from server 1 (this server) in domain 0, lacks 0-1-2"] {
            assert!(lacked(why).is_some(), "{why}");
        }
    }

    #[test]
    fn a_servers_own_old_stream_the_rebuilt_primary_lost_is_not_errant() {
        // CI: server 1 was primary once (0-1-8173), then replicated from server 2.
        // The primary (server 3's rebuild, seeded at 0-2-...) keeps no server 1 stream.
        assert!(errant("0-2-9029", "0-1-8173,0-2-8970", Some(1)).is_ok());
        // Its own stream as the latest is still errant: a commit the primary never got.
        assert!(errant("0-2-9029", "0-2-8970,0-1-8971", Some(1)).unwrap_err().contains("this server"));
        // A third server's stream the primary has none of and is not that far in.
        assert!(errant("0-2-9029", "0-2-9000,0-4-9030", Some(1)).unwrap_err().contains("lacks 0-4-9030"));
        assert!(errant("0-2-9029", "0-4-9000", Some(1)).is_ok());
        // Each domain has its own latest.
        assert!(errant("0-2-9029,1-2-5", "0-2-9000,1-1-6", Some(1)).unwrap_err().contains("lacks 1-1-6"));
    }
}
