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

    /// The acknowledged position as a MariaDB GTID list (`d-s-n,...`).
    pub fn position(&self) -> String {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(d, (s, n))| format!("{d}-{s}-{n}")).collect::<Vec<_>>().join(",")
    }
}

/// Does `position` (a server's GTID position, `d-s-n,...`) contain every GTID of
/// `other`? With gtid_strict_mode a domain's sequence numbers are ordered, so per
/// domain: a higher seq_no contains a lower one; an equal seq_no must come from the
/// same server (else the histories diverged: split brain). Returns the first
/// missing or diverging GTID as the reason when it does not.
pub fn contains(position: &str, other: &str) -> Result<(), String> {
    let pos: BTreeMap<u32, (u32, u64)> = position
        .split(',')
        .filter_map(|g| parse_gtid(g.trim()))
        .map(|(d, s, n)| (d, (s, n)))
        .collect();
    for g in other.split(',').filter(|g| !g.trim().is_empty()) {
        let Some((d, s, n)) = parse_gtid(g.trim()) else { continue };
        match pos.get(&d) {
            Some(&(_, have)) if have > n => {}
            Some(&(hs, have)) if have == n && hs == s => {}
            Some(&(hs, have)) if have == n => return Err(format!("has {d}-{hs}-{have} where the other has {d}-{s}-{n}: diverged")),
            Some(&(_, have)) => return Err(format!("has only up to seq {have} in domain {d}, needs {d}-{s}-{n}")),
            None => return Err(format!("has nothing of domain {d}, needs {d}-{s}-{n}")),
        }
    }
    Ok(())
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
    fn keeps_the_highest_per_domain() {
        let g = AckedGtids::default();
        g.record(b"0-1-5");
        g.record(b"0-2-3,1-1-9");
        g.record(b"0-2-8");
        g.record(b"garbage,0-x-1,");
        assert_eq!(g.position(), "0-2-8,1-1-9");
    }

    #[test]
    fn containment_is_per_domain() {
        assert!(contains("0-1-10,1-1-3", "0-2-8,1-1-3").is_ok());
        assert!(contains("0-1-7", "0-2-8").unwrap_err().contains("up to seq 7 in domain 0, needs 0-2-8"));
        assert!(contains("0-1-7", "1-1-1").unwrap_err().contains("nothing of domain 1"));
        assert!(contains("", "").is_ok());
        assert!(contains("0-2-8", "0-2-8").is_ok());
        assert!(contains("0-3-8", "0-2-8").unwrap_err().contains("diverged"));
    }
}
