//! What baton needs to know about a statement's text, read once per command:
//! whether it can end a transaction (so an interrupted one gets 9105, not 9101),
//! whether a read-only refusal (1290) of it proves nothing ran (so it may be held
//! and re-sent), which session state it creates that cannot follow a session to
//! another server (named locks, table locks, temporary tables, XA, user
//! variables), and `KILL <id>` (whose id baton translates).
//!
//! The scan is a small lexer, not a parser: it skips quoted strings and comments
//! (executable comments `/*! ... */` and `/*M! ... */` are read as code) and looks
//! at the first words of each `;`-separated statement. Where the text is ambiguous
//! to it (a backslash inside a string, whose meaning depends on sql_mode) it
//! answers on the safe side: "may end a transaction", "not provably unexecuted".

/// Session state a statement may create that a new backend session cannot have
/// (a bit set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pins(pub u8);

impl Pins {
    pub const NONE: Pins = Pins(0);
    /// `GET_LOCK()`: a named lock held by the server thread.
    pub const NAMED_LOCK: Pins = Pins(1);
    /// `LOCK TABLES`, `FLUSH TABLES ... WITH READ LOCK`.
    pub const TABLE_LOCK: Pins = Pins(2);
    /// `CREATE TEMPORARY TABLE`.
    pub const TEMP_TABLE: Pins = Pins(4);
    /// `XA START`: an XA transaction (it may be prepared and outlive COMMIT/ROLLBACK words).
    pub const XA: Pins = Pins(8);
    /// `@name`: user variables (their values cannot be read back from a lost server).
    pub const USER_VARIABLES: Pins = Pins(16);
    /// An open server-side cursor (COM_STMT_EXECUTE with a cursor flag).
    pub const CURSOR: Pins = Pins(32);

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn contains(self, other: Pins) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn union(self, other: Pins) -> Pins {
        Pins(self.0 | other.0)
    }
    pub fn without(self, other: Pins) -> Pins {
        Pins(self.0 & !other.0)
    }
    /// Names of the state held, for the error a client gets when it cannot move.
    pub fn describe(self) -> String {
        let names = [
            (Pins::NAMED_LOCK, "named locks (GET_LOCK)"),
            (Pins::TABLE_LOCK, "table locks (LOCK TABLES)"),
            (Pins::TEMP_TABLE, "temporary tables"),
            (Pins::XA, "an XA transaction"),
            (Pins::USER_VARIABLES, "user variables"),
            (Pins::CURSOR, "an open cursor"),
        ];
        names.iter().filter(|(p, _)| self.contains(*p)).map(|(_, n)| *n).collect::<Vec<_>>().join(", ")
    }
}

/// `KILL [HARD|SOFT] [CONNECTION|QUERY] <id>`: the text before the id, and the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    /// The statement up to the id, e.g. `KILL QUERY `.
    pub prefix: String,
    pub id: u64,
}

/// What one COM_QUERY (or prepared statement) text says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Analysis {
    /// More than one statement (`;` followed by more text).
    pub multi: bool,
    /// Could this text end (commit) an open transaction? False only when every
    /// statement provably cannot: DML, SELECT, SHOW, savepoints, ROLLBACK.
    pub may_end_transaction: bool,
    /// If the server's first response packet is the read-only ERR (1290), did
    /// nothing of this text run? False for CALL, EXECUTE and compound statements,
    /// which may have run statements before the refused one.
    pub refusal_proves_unexecuted: bool,
    /// State this text may create that cannot move to another server.
    pub pins: Pins,
    /// State this text releases (`UNLOCK TABLES`, `XA COMMIT`/`ROLLBACK`).
    pub unpins: Pins,
    /// A single `KILL <number>`.
    pub kill: Option<Kill>,
    /// The user variables (`@name`) the text names, lower case, each once.
    pub user_variables: Vec<Vec<u8>>,
    /// Names `session_track_system_variables` or `session_track_schema`: the
    /// client may change its tracking (the server does not always report it).
    pub touches_tracking: bool,
}

/// Words that never end a transaction, as a statement's first word.
const NON_ENDING: &[&str] = &[
    "SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "WITH", "VALUES", "TABLE", "SHOW", "DESCRIBE", "DESC", "EXPLAIN",
    "DO", "SAVEPOINT", "RELEASE", "HANDLER", "ROLLBACK", "(",
];
/// First words after which a read-only refusal may come after other statements ran.
const COMPOUND: &[&str] = &["CALL", "EXECUTE", "IF", "CASE", "LOOP", "REPEAT", "WHILE", "FOR", "DECLARE", "LABEL"];

/// One lexed statement: its first words (upper case) and what was seen in it.
#[derive(Debug, Default)]
struct Stmt {
    words: Vec<String>,
    /// Byte offset of each of `words` in the text.
    offsets: Vec<usize>,
    /// A number token right after the first words (for KILL).
    tokens: usize,
    get_lock: bool,
    /// `@name` user variables named (lower case: their names ignore case).
    user_vars: Vec<Vec<u8>>,
    /// A user variable whose name the lexer cannot be sure of.
    user_var_unknown: bool,
    tracking: bool,
    ambiguous: bool,
}

/// Analyse a statement text.
pub fn analyse(sql: &[u8]) -> Analysis {
    let stmts = lex(sql);
    let mut a = Analysis {
        multi: stmts.len() > 1,
        refusal_proves_unexecuted: true,
        ..Analysis::default()
    };
    for (i, s) in stmts.iter().enumerate() {
        let w = |n: usize| s.words.get(n).map(String::as_str).unwrap_or("");
        let first = w(0);
        if s.ambiguous || !NON_ENDING.contains(&first) {
            a.may_end_transaction = true;
        }
        if i == 0 && (COMPOUND.contains(&first) || (first == "BEGIN" && w(1) == "NOT") || s.ambiguous) {
            a.refusal_proves_unexecuted = false;
        }
        if s.get_lock {
            a.pins = a.pins.union(Pins::NAMED_LOCK);
        }
        if s.user_var_unknown {
            a.pins = a.pins.union(Pins::USER_VARIABLES);
        }
        for v in &s.user_vars {
            if !a.user_variables.contains(v) {
                a.user_variables.push(v.clone());
            }
        }
        a.touches_tracking |= s.tracking;
        match (first, w(1)) {
            ("LOCK", "TABLE" | "TABLES") => a.pins = a.pins.union(Pins::TABLE_LOCK),
            ("FLUSH", _) if s.words.iter().any(|x| x == "LOCK") => a.pins = a.pins.union(Pins::TABLE_LOCK),
            ("UNLOCK", "TABLE" | "TABLES") => a.unpins = a.unpins.union(Pins::TABLE_LOCK),
            ("CREATE", "TEMPORARY") => a.pins = a.pins.union(Pins::TEMP_TABLE),
            ("CREATE", "OR") if w(2) == "REPLACE" && w(3) == "TEMPORARY" => a.pins = a.pins.union(Pins::TEMP_TABLE),
            ("XA", "START" | "BEGIN") => a.pins = a.pins.union(Pins::XA),
            ("XA", "COMMIT" | "ROLLBACK") => a.unpins = a.unpins.union(Pins::XA),
            _ => {}
        }
    }
    if a.multi {
        a.may_end_transaction = true;
    }
    if !a.user_variables.is_empty() {
        // Reading them back after each statement would reset ROW_COUNT(),
        // FOUND_ROWS() and the warnings the client is about to read: held instead.
        a.pins = a.pins.union(Pins::USER_VARIABLES);
    }
    if let [s] = stmts.as_slice() {
        a.kill = kill(sql, s);
    }
    a
}

/// `KILL [HARD|SOFT] [CONNECTION|QUERY] <digits>` and nothing else.
fn kill(sql: &[u8], s: &Stmt) -> Option<Kill> {
    if s.words.first().map(String::as_str) != Some("KILL") {
        return None;
    }
    let mut i = 1;
    if matches!(s.words.get(i).map(String::as_str), Some("HARD" | "SOFT")) {
        i += 1;
    }
    if matches!(s.words.get(i).map(String::as_str), Some("CONNECTION" | "QUERY")) {
        i += 1;
    }
    // Exactly one more token, a number.
    if s.words.len() != i + 1 || s.tokens != i + 1 {
        return None;
    }
    let id: u64 = s.words[i].parse().ok()?;
    let prefix = String::from_utf8_lossy(&sql[..s.offsets[i]]).into_owned();
    Some(Kill { prefix, id })
}

/// Split into statements and record their first words (up to 8) and features.
fn lex(sql: &[u8]) -> Vec<Stmt> {
    let mut out = Vec::new();
    let mut cur = Stmt::default();
    let mut i = 0;
    let n = sql.len();
    let mut last_word_get_lock = false;
    while i < n {
        let c = sql[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c' => i += 1,
            b'#' => i = skip_line(sql, i),
            b'-' if sql.get(i + 1) == Some(&b'-') && sql.get(i + 2).is_none_or(|b| b.is_ascii_whitespace()) => {
                i = skip_line(sql, i)
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                // Executable comments are code: step inside, past the version digits.
                if sql.get(i + 2) == Some(&b'!') {
                    i += 3;
                    while i < n && sql[i].is_ascii_digit() {
                        i += 1;
                    }
                } else if sql.get(i + 2) == Some(&b'M') && sql.get(i + 3) == Some(&b'!') {
                    i += 4;
                    while i < n && sql[i].is_ascii_digit() {
                        i += 1;
                    }
                } else {
                    i = match find(&sql[i + 2..], b"*/") {
                        Some(p) => i + 2 + p + 2,
                        None => n,
                    };
                }
            }
            b'*' if sql.get(i + 1) == Some(&b'/') => i += 2, // the end of an executable comment
            b'\'' | b'"' | b'`' => {
                let (end, backslash) = skip_quoted(sql, i);
                if backslash {
                    cur.ambiguous = true;
                }
                cur.tokens += 1;
                last_word_get_lock = false;
                i = end;
            }
            b';' => {
                i += 1;
                if cur.tokens > 0 {
                    out.push(std::mem::take(&mut cur));
                }
            }
            b'@' => {
                if sql.get(i + 1) == Some(&b'@') {
                    // A system variable: skip @@[scope.]name.
                    i += 2;
                    while i < n && (sql[i].is_ascii_alphanumeric() || sql[i] == b'_' || sql[i] == b'.') {
                        i += 1;
                    }
                } else {
                    i += 1;
                    match sql.get(i) {
                        Some(b'\'' | b'"' | b'`') => {
                            let (end, backslash) = skip_quoted(sql, i);
                            let q = sql[i];
                            let inner = &sql[i + 1..end.saturating_sub(1).max(i + 1)];
                            if backslash || end > sql.len() || end < i + 2 {
                                cur.user_var_unknown = true;
                            } else {
                                let doubled = [q, q];
                                let mut name = Vec::with_capacity(inner.len());
                                let mut k = 0;
                                while k < inner.len() {
                                    name.push(inner[k]);
                                    k += if inner[k..].starts_with(&doubled) { 2 } else { 1 };
                                }
                                cur.user_vars.push(name.to_ascii_lowercase());
                            }
                            i = end;
                        }
                        Some(&b) if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'.') || b >= 0x80 => {
                            let start = i;
                            while i < n && (sql[i].is_ascii_alphanumeric() || matches!(sql[i], b'_' | b'$' | b'.') || sql[i] >= 0x80) {
                                i += 1;
                            }
                            cur.user_vars.push(sql[start..i].to_ascii_lowercase());
                        }
                        _ => {}
                    }
                }
                cur.tokens += 1;
                last_word_get_lock = false;
            }
            _ if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 => {
                let start = i;
                while i < n && (sql[i].is_ascii_alphanumeric() || sql[i] == b'_' || sql[i] == b'$' || sql[i] >= 0x80) {
                    i += 1;
                }
                let word = String::from_utf8_lossy(&sql[start..i]).to_ascii_uppercase();
                last_word_get_lock = word == "GET_LOCK";
                if word == "SESSION_TRACK_SYSTEM_VARIABLES" || word == "SESSION_TRACK_SCHEMA" {
                    cur.tracking = true;
                }
                if cur.words.len() < 8 {
                    cur.words.push(word);
                    cur.offsets.push(start);
                }
                cur.tokens += 1;
            }
            _ => {
                if c == b'(' {
                    if last_word_get_lock {
                        cur.get_lock = true;
                    }
                    if cur.tokens == 0 {
                        cur.words.push("(".into());
                        cur.offsets.push(i);
                    }
                }
                last_word_get_lock = false;
                cur.tokens += 1;
                i += 1;
            }
        }
    }
    if cur.tokens > 0 {
        out.push(cur);
    }
    out
}

fn skip_line(sql: &[u8], i: usize) -> usize {
    match sql[i..].iter().position(|&b| b == b'\n') {
        Some(p) => i + p + 1,
        None => sql.len(),
    }
}

/// Skip a quoted string or identifier starting at `i`; returns (end, saw a backslash).
fn skip_quoted(sql: &[u8], i: usize) -> (usize, bool) {
    let q = sql[i];
    let mut j = i + 1;
    let mut backslash = false;
    while j < sql.len() {
        let c = sql[j];
        if c == b'\\' && q != b'`' {
            backslash = true;
            j += 2;
            continue;
        }
        if c == q {
            if sql.get(j + 1) == Some(&q) {
                j += 2; // a doubled quote
                continue;
            }
            return (j + 1, backslash);
        }
        j += 1;
    }
    (sql.len(), true)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ends(sql: &str) -> bool {
        analyse(sql.as_bytes()).may_end_transaction
    }

    #[test]
    fn what_may_end_a_transaction() {
        for s in [
            "COMMIT",
            "/*x*/ COMMIT",
            "  commit work",
            "INSERT INTO t VALUES (1); COMMIT",
            "XA COMMIT 'x'",
            "CREATE TABLE t (a INT)",
            "SET autocommit=1",
            "BEGIN",
            "START TRANSACTION",
            "CALL p()",
            "/*!40101 COMMIT */",
            "INSERT INTO t VALUES ('a\\'); COMMIT; -- ')",
            "LOCK TABLES t WRITE",
        ] {
            assert!(ends(s), "{s}");
        }
        for s in [
            "INSERT INTO t VALUES (1)",
            "select * from t where a = ';commit'",
            "UPDATE t SET a = 1 -- ; COMMIT\n",
            "DELETE FROM t # ; commit",
            "ROLLBACK",
            "SAVEPOINT a",
            "(SELECT 1)",
            "SELECT 1;",
            "/* COMMIT */ SELECT 1",
        ] {
            assert!(!ends(s), "{s}");
        }
    }

    #[test]
    fn refusal_proof() {
        assert!(analyse(b"INSERT INTO t VALUES (1)").refusal_proves_unexecuted);
        assert!(analyse(b"INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)").refusal_proves_unexecuted);
        assert!(!analyse(b"CALL p()").refusal_proves_unexecuted);
        assert!(!analyse(b" /**/ call p()").refusal_proves_unexecuted);
        assert!(!analyse(b"EXECUTE s").refusal_proves_unexecuted);
        assert!(!analyse(b"BEGIN NOT ATOMIC INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); END").refusal_proves_unexecuted);
        assert!(analyse(b"BEGIN").refusal_proves_unexecuted);
    }

    #[test]
    fn pins() {
        assert_eq!(analyse(b"SELECT GET_LOCK('k', 5)").pins, Pins::NAMED_LOCK);
        assert_eq!(analyse(b"SELECT get_lock ('k', 5)").pins, Pins::NAMED_LOCK);
        assert_eq!(analyse(b"SELECT 'GET_LOCK(1)'").pins, Pins::NONE);
        assert_eq!(analyse(b"LOCK TABLES t READ").pins, Pins::TABLE_LOCK);
        assert_eq!(analyse(b"UNLOCK TABLES").unpins, Pins::TABLE_LOCK);
        assert_eq!(analyse(b"CREATE TEMPORARY TABLE t (a INT)").pins, Pins::TEMP_TABLE);
        assert_eq!(analyse(b"create or replace temporary table t (a int)").pins, Pins::TEMP_TABLE);
        assert_eq!(analyse(b"XA START 'x'").pins, Pins::XA);
        assert_eq!(analyse(b"SET @a = 1").pins, Pins::USER_VARIABLES);
        assert_eq!(analyse(b"SET @A = 1, @b := 2").user_variables, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(analyse(b"SELECT 1 INTO @`x``y`").user_variables, vec![b"x`y".to_vec()]);
        assert_eq!(analyse(b"SELECT @'it''s'").user_variables, vec![b"it's".to_vec()]);
        assert_eq!(analyse(b"SELECT @'a\\b'").pins, Pins::USER_VARIABLES);
        assert_eq!(analyse(b"SELECT @@session.sql_mode, 'a@b'").pins, Pins::NONE);
        assert_eq!(analyse(b"FLUSH TABLES WITH READ LOCK").pins, Pins::TABLE_LOCK);
    }

    #[test]
    fn kills() {
        let k = |s: &str| analyse(s.as_bytes()).kill;
        assert_eq!(k("KILL 42"), Some(Kill { prefix: "KILL ".into(), id: 42 }));
        assert_eq!(k("kill query 7"), Some(Kill { prefix: "kill query ".into(), id: 7 }));
        assert_eq!(k("KILL HARD CONNECTION 9"), Some(Kill { prefix: "KILL HARD CONNECTION ".into(), id: 9 }));
        assert_eq!(k("KILL QUERY ID 9"), None);
        assert_eq!(k("KILL CONNECTION_ID()"), None);
        assert_eq!(k("KILL 1; KILL 2"), None);
        assert_eq!(k("KILL USER app"), None);
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = analyse(&data);
        }
    }
}
