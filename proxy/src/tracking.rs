//! Session tracking as each client asked for it.
//!
//! baton needs every backend session to track all system variables (to restore
//! them elsewhere, and for `last_gtid`: the GTID of each write it acknowledges)
//! and the schema. A client may set `session_track_system_variables` and
//! `session_track_schema` to other values (MariaDB Connector/J does at connect):
//! baton keeps the client's values here, puts its own back on the backend, and
//! filters each OK packet's session-state information down to what the server
//! would have sent the client with its own values (`session_track_state_change`
//! too: baton switches it on to learn of state it cannot see). Source: MariaDB KB
//! "session_track_system_variables", and the OK packet's session state
//! ("OK_Packet", MariaDB protocol pages): entries of (type u8, lenenc data);
//! type 0 system variable (lenenc name, lenenc value), 1 schema.

use std::borrow::Cow;

use crate::proto::{put_lenenc, Cursor};

/// The names baton intercepts (their values as the client set them live here).
pub const TRACK_VARIABLES: &[u8] = b"session_track_system_variables";
pub const TRACK_SCHEMA: &[u8] = b"session_track_schema";
pub const TRACK_STATE_CHANGE: &[u8] = b"session_track_state_change";

const SYSTEM_VARIABLE: u8 = 0;
const SCHEMA: u8 = 1;
const STATE_CHANGE: u8 = 2;

/// What one client asked to track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTracking {
    /// None: every variable (`*`); otherwise the lower-case names.
    variables: Option<Vec<Vec<u8>>>,
    schema: bool,
    state_change: bool,
}

impl Default for ClientTracking {
    /// MariaDB 10.11's defaults.
    fn default() -> Self {
        let mut t = ClientTracking { variables: None, schema: true, state_change: false };
        t.set_variables(b"autocommit,character_set_client,character_set_connection,character_set_results,time_zone");
        t
    }
}

impl ClientTracking {
    /// From the server's values for a new session (`@@session_track_*`).
    pub fn from_server(variables: &[u8], schema: &[u8], state_change: &[u8]) -> Self {
        let mut t = ClientTracking { variables: None, schema: true, state_change: false };
        t.set_variables(variables);
        t.set_schema(schema);
        t.set_state_change(state_change);
        t
    }

    /// `session_track_state_change` as the client set it.
    pub fn set_state_change(&mut self, value: &[u8]) {
        self.state_change = on(value);
    }

    /// `session_track_system_variables` as the client set it: a comma list, `*` for all.
    pub fn set_variables(&mut self, value: &[u8]) {
        let names: Vec<Vec<u8>> = value.split(|&b| b == b',').map(|n| n.trim_ascii().to_ascii_lowercase()).filter(|n| !n.is_empty()).collect();
        self.variables = if names.iter().any(|n| n == b"*") { None } else { Some(names) };
    }

    /// `session_track_schema` as the client set it (ON/OFF/1/0).
    pub fn set_schema(&mut self, value: &[u8]) {
        self.schema = on(value);
    }

    fn tracks(&self, name: &[u8]) -> bool {
        match &self.variables {
            None => true,
            Some(list) => list.iter().any(|n| n.eq_ignore_ascii_case(name)),
        }
    }

    /// The session-state information the client would have received: entries it
    /// does not track removed. Borrowed unchanged when nothing is removed.
    pub fn filter<'a>(&self, state: &'a [u8]) -> Cow<'a, [u8]> {
        let mut out: Option<Vec<u8>> = None;
        let mut rest = state;
        let mut kept_upto = 0; // bytes of `state` copied or to copy unchanged
        while !rest.is_empty() {
            let start = state.len() - rest.len();
            let mut c = Cursor::new(rest);
            let (Some(kind), Some(body)) = (c.u8(), c.lenenc_bytes()) else { break };
            rest = c.rest();
            let keep = match kind {
                SYSTEM_VARIABLE => Cursor::new(body).lenenc_bytes().is_none_or(|name| self.tracks(name)),
                SCHEMA => self.schema,
                STATE_CHANGE => self.state_change,
                _ => true,
            };
            let end = state.len() - rest.len();
            if keep {
                if let Some(o) = out.as_mut() {
                    o.extend_from_slice(&state[start..end]);
                } else {
                    kept_upto = end;
                }
            } else if out.is_none() {
                out = Some(state[..kept_upto].to_vec());
            }
        }
        match out {
            None => Cow::Borrowed(state),
            Some(mut o) => {
                // Anything unparsed at the end is kept as it was.
                o.extend_from_slice(rest);
                Cow::Owned(o)
            }
        }
    }
}

fn on(value: &[u8]) -> bool {
    matches!(value.to_ascii_uppercase().as_slice(), b"ON" | b"1" | b"TRUE")
}

/// Encode one system-variable entry (for tests and baton's own packets).
pub fn variable_entry(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    put_lenenc(&mut body, name.len() as u64);
    body.extend_from_slice(name);
    put_lenenc(&mut body, value.len() as u64);
    body.extend_from_slice(value);
    let mut e = vec![SYSTEM_VARIABLE];
    put_lenenc(&mut e, body.len() as u64);
    e.extend_from_slice(&body);
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn schema_entry(s: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        put_lenenc(&mut body, s.len() as u64);
        body.extend_from_slice(s);
        let mut e = vec![SCHEMA];
        put_lenenc(&mut e, body.len() as u64);
        e.extend_from_slice(&body);
        e
    }

    #[test]
    fn filters_what_the_client_does_not_track() {
        let gtid = variable_entry(b"last_gtid", b"0-1-5");
        let ac = variable_entry(b"autocommit", b"ON");
        let schema = schema_entry(b"db");
        let all = [gtid.clone(), ac.clone(), schema.clone()].concat();
        let mut t = ClientTracking::default();
        assert_eq!(t.filter(&all).as_ref(), [ac.clone(), schema.clone()].concat().as_slice());
        t.set_variables(b" * ");
        assert!(matches!(t.filter(&all), Cow::Borrowed(_)));
        t.set_variables(b"AUTOCOMMIT");
        t.set_schema(b"OFF");
        assert_eq!(t.filter(&all).as_ref(), ac.as_slice());
        t.set_variables(b"");
        assert!(t.filter(&all).is_empty());
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ClientTracking::default().filter(&data);
        }
    }
}
