//! The GTIDs baton acknowledged to clients, per cluster: the highest sequence
//! number per replication domain. A new primary must contain all of them before
//! the buffer may drain to it (leadership condition C4).

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
}
