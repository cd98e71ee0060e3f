//! Re-creating a session's state on a new backend session, between transactions:
//! the schema (at login), every session variable the client changed (from session
//! tracking), the multi-statements option, and every prepared statement (prepared
//! again; the client keeps baton's ids). User variables and temporary tables are
//! not carried over.

use crate::backend::Backend;
use crate::state::SessionState;

/// Variables baton sets itself or that are not session state to restore.
const SKIP: &[&[u8]] = &[b"last_gtid", b"session_track_system_variables", b"session_track_schema"];

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
    state
        .variables
        .iter()
        .filter(|(n, _)| valid_name(n) && !SKIP.contains(&n.as_slice()))
        .map(|(n, v)| format!("{} = {}", String::from_utf8_lossy(n), literal(v)))
        .collect()
}

/// Restore `state` on `backend`. Returns the problems met (restoration goes on
/// past each one; a statement that cannot be prepared again is dropped, so its
/// next use gets ERR 1243).
pub async fn restore(backend: &mut Backend, state: &mut SessionState, deprecate_eof: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let sets = assignments(state);
    if !sets.is_empty() && backend.simple_command(&format!("SET SESSION {}", sets.join(", "))).await.is_err() {
        for a in &sets {
            if let Err(e) = backend.simple_command(&format!("SET SESSION {a}")).await {
                problems.push(format!("{a}: {e}"));
            }
        }
    }
    if let Some(on) = state.multi_statements {
        if let Err(e) = backend.set_option(on).await {
            problems.push(format!("multi-statements option: {e}"));
        }
    }
    let ids: Vec<u32> = state.statements.keys().copied().collect();
    for id in ids {
        let sql = state.statements[&id].sql.clone();
        match backend.prepare(&sql, deprecate_eof).await {
            Ok(new_id) => {
                if let Some(s) = state.statements.get_mut(&id) {
                    s.backend_id = new_id;
                }
            }
            Err(e) => {
                problems.push(format!("statement {id}: {e}"));
                state.statements.remove(&id);
            }
        }
    }
    problems
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
        assert_eq!(
            assignments(&s),
            vec!["init_connect = 'it''s'", "sql_mode = 'ANSI_QUOTES'", "time_zone = '+01:00'", "wait_timeout = 100"]
        );
    }
}
