//! Re-creating a session's state on a new backend session, between transactions
//! (or before a transaction replay re-runs one there):
//! the schema (at login), every session variable the client changed (from session
//! tracking; character sets before collations, as `SET NAMES` leaves them), the
//! multi-statements option, `LAST_INSERT_ID()`, and every prepared statement
//! (prepared again; the client keeps baton's ids). State that cannot be carried
//! (named locks, table locks, temporary tables, XA, user variables, open cursors:
//! [`crate::sql::Pins`]) is never restored: such a session is ended instead.

use crate::backend::Backend;
use crate::state::SessionState;

/// Variables baton sets itself or that are not session state to restore.
/// `insert_id` is consumed by the next INSERT: restoring it would apply it twice.
const SKIP: &[&[u8]] = &[b"last_gtid", b"session_track_system_variables", b"session_track_schema", b"session_track_state_change", b"insert_id"];

/// Variables whose empty tracked value means NULL (`SET character_set_results = NULL`).
const NULLABLE: &[&[u8]] = &[b"character_set_results"];

/// Quote a tracked value for `SET SESSION name = value`: numbers bare, anything
/// else as a string literal.
fn literal(value: &[u8]) -> String {
    let s = String::from_utf8_lossy(value);
    let numeric = !s.is_empty()
        && s.trim_start_matches('-').split('.').count() <= 2
        && s.trim_start_matches('-').split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if numeric {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    }
}

fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// The `SET SESSION` assignments restoring `state`'s variables.
pub fn assignments(state: &SessionState) -> Vec<String> {
    let mut vars: Vec<(&Vec<u8>, &Vec<u8>)> = state.variables.iter().filter(|(n, _)| valid_name(n) && !SKIP.contains(&n.as_slice())).collect();
    // A character set resets its collation: collations last.
    vars.sort_by_key(|(n, _)| (n.starts_with(b"collation_"), n.to_vec()));
    vars.into_iter()
        .map(|(n, v)| {
            let value = if v.is_empty() && NULLABLE.contains(&n.as_slice()) { "NULL".to_string() } else { literal(v) };
            format!("{} = {}", String::from_utf8_lossy(n), value)
        })
        .collect()
}

/// Restore `state` on `backend`. Err names what could not be restored (the
/// session must not go on without it). A prepared statement that cannot be
/// prepared again (its table is gone) is dropped, as the server would have
/// dropped it: its next use gets ERR 1243.
pub async fn restore(backend: &mut Backend, state: &mut SessionState) -> Result<(), String> {
    let sets = assignments(state);
    if !sets.is_empty() && backend.simple_command(&format!("SET SESSION {}", sets.join(", "))).await.is_err() {
        for a in &sets {
            backend.simple_command(&format!("SET SESSION {a}")).await.map_err(|e| format!("{a}: {e}"))?;
        }
    }
    if state.last_insert_id != 0 {
        let sql = format!("DO LAST_INSERT_ID({})", state.last_insert_id);
        backend.simple_command(&sql).await.map_err(|e| format!("LAST_INSERT_ID: {e}"))?;
    }
    if let Some(on) = state.multi_statements {
        backend.set_option(on).await.map_err(|e| format!("multi-statements option: {e}"))?;
    }
    // The one prepared last goes last, so the server's own "last prepared" agrees.
    let mut ids: Vec<u32> = state.statements.keys().copied().filter(|id| Some(*id) != state.last_prepared).collect();
    ids.extend(state.last_prepared.filter(|id| state.statements.contains_key(id)));
    for id in ids {
        let sql = state.statements[&id].sql.clone();
        match backend.prepare(&sql).await {
            Ok(new_id) => {
                if let Some(s) = state.statements.get_mut(&id) {
                    s.backend_id = new_id;
                }
            }
            Err(crate::backend::BackendError::Refused(e)) => {
                tracing::info!(id, error = ?crate::proto::parse_err(&e), "prepared statement dropped: it cannot be prepared on the new backend");
                state.statements.remove(&id);
            }
            Err(e) => return Err(format!("statement {id}: {e}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_skips() {
        let mut s = SessionState::new(None);
        s.variables.insert(b"sql_mode".to_vec(), b"ANSI_QUOTES".to_vec());
        s.variables.insert(b"wait_timeout".to_vec(), b"100".to_vec());
        s.variables.insert(b"last_gtid".to_vec(), b"0-1-2".to_vec());
        s.variables.insert(b"time_zone".to_vec(), b"+01:00".to_vec());
        s.variables.insert(b"x; DROP".to_vec(), b"1".to_vec());
        s.variables.insert(b"init_connect".to_vec(), b"it's".to_vec());
        assert_eq!(assignments(&s), vec!["init_connect = 'it''s'", "sql_mode = 'ANSI_QUOTES'", "time_zone = '+01:00'", "wait_timeout = 100"]);
    }
}
