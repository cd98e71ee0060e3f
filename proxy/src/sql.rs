//! What baton needs to know about a statement's text, read once per command:
//! whether it can end a transaction (so an interrupted one gets 9105, not 9101),
//! whether a read-only refusal (1290) of it proves nothing ran (so it may be held
//! and re-sent), which session state it creates that cannot follow a session to
//! another server (named locks, table locks, temporary tables, XA, user
//! variables, HANDLER, EXECUTE IMMEDIATE), the variables it sets to DEFAULT, and
//! `KILL <id>` (whose id baton translates).
//!
//! The scan is a small lexer, not a parser: it skips quoted strings and comments
//! (executable comments `/*! ... */` and `/*M! ... */` are read as code) and looks
//! at the first tokens of each `;`-separated statement (after `SET STATEMENT ...
//! FOR`, the statement it wraps). It keeps a bounded amount per statement and
//! folds each into the result as it ends, so any text is read in linear time and
//! constant memory. Where the text is ambiguous to it (a backslash inside a
//! string, whose meaning depends on sql_mode; a wrapped statement it cannot find)
//! it answers on the safe side: "may end a transaction", "not provably unexecuted".

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
    /// `HANDLER t OPEN`.
    pub const HANDLER: Pins = Pins(64);
    /// State baton cannot see: `EXECUTE IMMEDIATE`, `PREPARE ... FROM`, or a
    /// change the server reported (session_track_state_change) with no variable
    /// or schema change to explain it (a procedure's user variables, temporary tables).
    pub const SERVER_STATE: Pins = Pins(128);

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
            (Pins::HANDLER, "an open HANDLER"),
            (Pins::SERVER_STATE, "session state baton cannot carry (SQL prepared statements, EXECUTE IMMEDIATE, state set by a procedure)"),
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
    /// The statement after the id, e.g. `)` or ` */`.
    pub suffix: String,
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
    /// State this text releases (`UNLOCK TABLES`, `XA COMMIT`/`ROLLBACK`, `HANDLER t CLOSE`).
    pub unpins: Pins,
    /// A single `KILL <number>`.
    pub kill: Option<Kill>,
    /// Which of the tracking variables the text names (bit i: [`TRACKING`]\[i\]):
    /// the client may change them (the server does not always report it).
    pub touches_tracking: u8,
    /// `SET STATEMENT ... FOR`: variables it names change for one statement only.
    pub set_statement: bool,
    /// One `BEGIN [WORK]` or `START TRANSACTION ...`: sent outside a transaction,
    /// it changes nothing a lost connection keeps (safe to send again).
    pub only_begins: bool,
    /// One `SELECT` that provably changes nothing: no parenthesis (so no
    /// function call or subquery), no `INTO`, locking clause or sequence, no
    /// user variable, read whole by the lexer. Safe to send again when its
    /// connection was lost before any answer (a pool's `SELECT 1`).
    pub side_effect_free: bool,
    /// System variables set to `DEFAULT` (lower case): not restored elsewhere
    /// (the server reports a value for some, e.g. `timestamp`, that is not the default).
    pub defaulted: Vec<String>,
}

/// Words that never end a transaction, as a statement's first word.
const NON_ENDING: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "REPLACE",
    "WITH",
    "VALUES",
    "TABLE",
    "SHOW",
    "DESCRIBE",
    "DESC",
    "EXPLAIN",
    "DO",
    "SAVEPOINT",
    "RELEASE",
    "HANDLER",
    "ROLLBACK",
    "(",
];
/// First words after which a read-only refusal may come after other statements ran.
const COMPOUND: &[&str] = &["CALL", "EXECUTE", "IF", "CASE", "LOOP", "REPEAT", "WHILE", "FOR", "DECLARE", "LABEL"];
/// Tokens kept per statement.
const KEEP: usize = 24;
/// Names set to DEFAULT kept per text.
const KEEP_DEFAULTED: usize = 32;
/// The tracking variables a client may set (lower case).
pub const TRACKING: &[&str] = &["session_track_system_variables", "session_track_schema", "session_track_state_change"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Kind {
    /// A word or number.
    Word,
    /// A quoted string or identifier.
    Quoted,
    /// `@@[scope.]name`.
    SysVar,
    /// `@name`.
    UserVar,
    #[default]
    Punct,
}

/// Up to [`Text::CAP`] bytes of a token, upper case (no allocation).
#[derive(Debug, Clone, Copy, Default)]
struct Text {
    buf: [u8; Text::CAP],
    len: u8,
    /// Longer than `CAP`: never equal to a keyword or number baton compares.
    long: bool,
}

impl Text {
    const CAP: usize = 24;

    fn upper(bytes: &[u8]) -> Text {
        let mut t = Text { long: bytes.len() > Self::CAP, ..Text::default() };
        let n = bytes.len().min(Self::CAP);
        t.buf[..n].copy_from_slice(&bytes[..n]);
        t.buf[..n].make_ascii_uppercase();
        t.len = n as u8;
        t
    }

    fn as_str(&self) -> &str {
        if self.long {
            return "";
        }
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("")
    }
}

/// One token: its kind, its text (upper case, bounded) and where it is.
#[derive(Debug, Clone, Copy, Default)]
struct Token {
    kind: Kind,
    text: Text,
    /// Byte range in the statement text (for quoted tokens, quotes included).
    start: usize,
    end: usize,
}

/// One statement as the lexer keeps it: its first tokens and what was seen in it.
#[derive(Debug, Default)]
struct Stmt {
    tokens: [Token; KEEP],
    kept: usize,
    count: usize,
    get_lock: bool,
    user_var: bool,
    tracking: u8,
    ambiguous: bool,
}

impl Stmt {
    fn tokens(&self) -> &[Token] {
        &self.tokens[..self.kept]
    }

    fn word(&self, i: usize) -> &str {
        self.tokens().get(i).filter(|t| t.kind == Kind::Word || t.kind == Kind::Punct).map(|t| t.text.as_str()).unwrap_or("")
    }
}

/// Analyse a statement text.
pub fn analyse(sql: &[u8]) -> Analysis {
    let mut a = Analysis { refusal_proves_unexecuted: true, ..Analysis::default() };
    let mut n = 0usize;
    let mut first: Option<Stmt> = None;
    lex(sql, &mut a, |s, a| {
        fold(s, n == 0, a);
        if n == 0 {
            first = Some(std::mem::take(s));
        }
        n += 1;
    });
    a.multi = n > 1;
    if a.multi {
        a.may_end_transaction = true;
    }
    if let (1, Some(s)) = (n, first.as_ref()) {
        a.kill = kill(sql, s);
        a.only_begins = !s.ambiguous && matches!((s.word(0), s.word(1)), ("BEGIN", "" | "WORK") | ("START", "TRANSACTION"));
        a.side_effect_free = !s.ambiguous
            && !s.user_var
            && !s.get_lock
            && s.count <= s.kept
            && s.word(0) == "SELECT"
            && s.tokens().iter().all(|t| match t.kind {
                Kind::Punct => t.text.as_str() != "(",
                Kind::Word => !matches!(t.text.as_str(), "INTO" | "FOR" | "LOCK" | "NEXT" | "NEXTVAL" | "LASTVAL" | "SETVAL" | "PREVIOUS"),
                _ => true,
            });
    }
    a
}

/// The index of the statement's own first token: past `SET STATEMENT ... FOR`.
fn start(s: &Stmt) -> Option<usize> {
    if s.word(0) == "SET" && s.word(1) == "STATEMENT" {
        return s.tokens().iter().position(|t| t.kind == Kind::Word && t.text.as_str() == "FOR").map(|i| i + 1);
    }
    Some(0)
}

fn fold(s: &Stmt, is_first: bool, a: &mut Analysis) {
    let at = start(s);
    a.set_statement |= at.is_some_and(|i| i > 0) || at.is_none();
    let b = at.unwrap_or(0);
    let w = |n: usize| s.word(b + n);
    let first = w(0);
    // The statement's first word not kept (a long SET STATEMENT prefix): unknown.
    let unknown = at.is_none() || first.is_empty();
    if s.ambiguous || unknown || !NON_ENDING.contains(&first) {
        a.may_end_transaction = true;
    }
    if is_first && (unknown || s.ambiguous || COMPOUND.contains(&first) || (first == "BEGIN" && w(1) == "NOT")) {
        a.refusal_proves_unexecuted = false;
    }
    let truncated = s.count > s.kept;
    let mut pin = |p: Pins| a.pins = a.pins.union(p);
    if s.get_lock {
        pin(Pins::NAMED_LOCK);
    }
    if s.user_var {
        // Reading them back after each statement would reset ROW_COUNT(),
        // FOUND_ROWS() and the warnings the client is about to read: held instead.
        pin(Pins::USER_VARIABLES);
    }
    let handler_word = |x: &str| (1..5).any(|i| w(i) == x);
    match (first, w(1)) {
        ("LOCK", "TABLE" | "TABLES") => pin(Pins::TABLE_LOCK),
        ("FLUSH", _) if truncated || (1..KEEP).any(|i| w(i) == "LOCK") => pin(Pins::TABLE_LOCK),
        ("CREATE", "TEMPORARY") => pin(Pins::TEMP_TABLE),
        ("CREATE", "OR") if w(2) == "REPLACE" && w(3) == "TEMPORARY" => pin(Pins::TEMP_TABLE),
        ("XA", "START" | "BEGIN") => pin(Pins::XA),
        ("HANDLER", _) if handler_word("OPEN") => pin(Pins::HANDLER),
        ("EXECUTE", "IMMEDIATE") | ("PREPARE", _) => pin(Pins::SERVER_STATE),
        ("UNLOCK", "TABLE" | "TABLES") => a.unpins = a.unpins.union(Pins::TABLE_LOCK),
        ("XA", "COMMIT" | "ROLLBACK") => a.unpins = a.unpins.union(Pins::XA),
        ("HANDLER", _) if handler_word("CLOSE") => a.unpins = a.unpins.union(Pins::HANDLER),
        _ => {}
    }
    a.touches_tracking |= s.tracking;
}

/// `KILL [HARD|SOFT] [CONNECTION|QUERY] <id>`, the id a number, `(number)`,
/// `'number'` or `0xhex`, and nothing else.
fn kill(sql: &[u8], s: &Stmt) -> Option<Kill> {
    if s.word(0) != "KILL" {
        return None;
    }
    let mut i = 1;
    if matches!(s.word(i), "HARD" | "SOFT") {
        i += 1;
    }
    if matches!(s.word(i), "CONNECTION" | "QUERY") {
        i += 1;
    }
    let rest = &s.tokens()[i.min(s.kept)..];
    if s.count != s.kept {
        return None;
    }
    let number = |t: &Token| -> Option<u64> {
        match t.kind {
            Kind::Word => match t.text.as_str().strip_prefix("0X") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => t.text.as_str().parse().ok(),
            },
            Kind::Quoted => std::str::from_utf8(sql.get(t.start + 1..t.end.saturating_sub(1))?).ok()?.trim().parse().ok(),
            _ => None,
        }
    };
    let t = match rest {
        [t] => t,
        [o, t, c] if o.text.as_str() == "(" && c.text.as_str() == ")" => t,
        _ => return None,
    };
    let id = number(t)?;
    let prefix = String::from_utf8_lossy(&sql[..t.start]).into_owned();
    let suffix = String::from_utf8_lossy(&sql[t.end..]).into_owned();
    Some(Kill { prefix, id, suffix })
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Split into statements; hand each to `done` as it ends.
fn lex(sql: &[u8], a: &mut Analysis, mut done: impl FnMut(&mut Stmt, &mut Analysis)) {
    let mut cur = Stmt::default();
    let mut i = 0;
    let n = sql.len();
    // The last two tokens, for `GET_LOCK(` and `name = DEFAULT`.
    let mut prev = Token::default();
    let mut prev2 = Token::default();
    while i < n {
        let c = sql[i];
        let start = i;
        let kind = match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c' => {
                i += 1;
                continue;
            }
            b'#' => {
                i = skip_line(sql, i);
                continue;
            }
            b'-' if sql.get(i + 1) == Some(&b'-') && sql.get(i + 2).is_none_or(|b| b.is_ascii_whitespace()) => {
                i = skip_line(sql, i);
                continue;
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                // Executable comments are code: step inside, past the version
                // digits. With a version, whether the server runs the text depends
                // on its version: read it as code, but the statement is ambiguous.
                if sql.get(i + 2) == Some(&b'!') || (sql.get(i + 2) == Some(&b'M') && sql.get(i + 3) == Some(&b'!')) {
                    i += if sql[i + 2] == b'!' { 3 } else { 4 };
                    let digits = i;
                    while i < n && sql[i].is_ascii_digit() {
                        i += 1;
                    }
                    if i > digits {
                        cur.ambiguous = true;
                    }
                } else {
                    i = match find(&sql[i + 2..], b"*/") {
                        Some(p) => i + 2 + p + 2,
                        None => n,
                    };
                }
                continue;
            }
            b'*' if sql.get(i + 1) == Some(&b'/') => {
                i += 2; // the end of an executable comment
                continue;
            }
            b';' => {
                i += 1;
                if cur.count > 0 {
                    done(&mut cur, a);
                    cur = Stmt::default();
                }
                prev = Token::default();
                prev2 = prev;
                continue;
            }
            b'\'' | b'"' | b'`' => {
                let (end, backslash) = skip_quoted(sql, i);
                cur.ambiguous |= backslash;
                i = end;
                Kind::Quoted
            }
            b'@' if sql.get(i + 1) == Some(&b'@') => {
                // A system variable: @@[scope.]name.
                i += 2;
                while i < n && (is_word_byte(sql[i]) || sql[i] == b'.') {
                    i += 1;
                }
                Kind::SysVar
            }
            b'@' => {
                i += 1;
                match sql.get(i) {
                    Some(b'\'' | b'"' | b'`') => {
                        let (end, backslash) = skip_quoted(sql, i);
                        cur.ambiguous |= backslash;
                        cur.user_var = true;
                        i = end;
                    }
                    Some(&b) if is_word_byte(b) || b == b'.' => {
                        while i < n && (is_word_byte(sql[i]) || sql[i] == b'.') {
                            i += 1;
                        }
                        cur.user_var = true;
                    }
                    _ => {}
                }
                Kind::UserVar
            }
            _ if is_word_byte(c) => {
                while i < n && is_word_byte(sql[i]) {
                    i += 1;
                }
                Kind::Word
            }
            _ => {
                i += 1;
                // `:=` reads like `=` (so `name := DEFAULT` is `name = DEFAULT`).
                if c == b':' && sql.get(i) == Some(&b'=') {
                    i += 1;
                }
                Kind::Punct
            }
        };
        let bytes = &sql[start..i];
        let text = match kind {
            Kind::Punct if bytes == b":=" => Text::upper(b"="),
            Kind::Quoted | Kind::UserVar => Text::default(),
            _ => Text::upper(bytes),
        };
        let tok = Token { kind, text, start, end: i };
        if kind == Kind::Punct && text.as_str() == "(" && prev.kind == Kind::Word && prev.text.as_str() == "GET_LOCK" {
            cur.get_lock = true;
        }
        // The variable's own name: a word, or @@name after its scope.
        let name = |t: &Token| -> &[u8] {
            let b = &sql[t.start..t.end];
            match t.kind {
                Kind::SysVar => {
                    let b = b.strip_prefix(b"@@").unwrap_or(b);
                    b.rsplit(|&x| x == b'.').next().unwrap_or(b)
                }
                _ => b,
            }
        };
        if matches!(kind, Kind::Word | Kind::SysVar) {
            let nm = name(&tok);
            if let Some(k) = TRACKING.iter().position(|t| t.as_bytes().eq_ignore_ascii_case(nm)) {
                cur.tracking |= 1 << k;
            }
        }
        if kind == Kind::Word
            && text.as_str() == "DEFAULT"
            && prev.text.as_str() == "="
            && matches!(prev2.kind, Kind::Word | Kind::SysVar)
            && a.defaulted.len() < KEEP_DEFAULTED
        {
            a.defaulted.push(String::from_utf8_lossy(name(&prev2)).to_ascii_lowercase());
        }
        prev2 = prev;
        prev = tok;
        cur.count += 1;
        if cur.kept < KEEP {
            cur.tokens[cur.kept] = tok;
            cur.kept += 1;
        }
    }
    if cur.count > 0 {
        done(&mut cur, a);
    }
}

fn skip_line(sql: &[u8], i: usize) -> usize {
    match sql[i..].iter().position(|&b| b == b'\n') {
        Some(p) => i + p + 1,
        None => sql.len(),
    }
}

/// Skip a quoted string or identifier starting at `i`: (end, saw a backslash
/// or no closing quote).
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
    fn only_a_select_that_calls_nothing_is_side_effect_free() {
        for s in ["SELECT 1", "select 1", "SELECT @@version", "SELECT a, b FROM t WHERE id = 5 ORDER BY a", "/* ping */ SELECT 1"] {
            assert!(analyse(s.as_bytes()).side_effect_free, "{s}");
        }
        for s in [
            "SELECT f(1)",
            "SELECT SLEEP(1)",
            "SELECT GET_LOCK('x', 1)",
            "SELECT a FROM t WHERE id IN (SELECT b FROM u)",
            "SELECT a INTO @x FROM t",
            "SELECT a FROM t FOR UPDATE",
            "SELECT a FROM t LOCK IN SHARE MODE",
            "SELECT NEXT VALUE FOR s",
            "SELECT @x",
            "SELECT 1; SELECT 2",
            "INSERT INTO t VALUES (1)",
            "SELECT 'a\\'",
            "SELECT a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q, r FROM t",
        ] {
            assert!(!analyse(s.as_bytes()).side_effect_free, "{s}");
        }
    }

    #[test]
    fn only_a_plain_begin_is_safe_to_send_again() {
        for s in ["BEGIN", " begin work", "START TRANSACTION", "start transaction read only", "START TRANSACTION WITH CONSISTENT SNAPSHOT"] {
            assert!(analyse(s.as_bytes()).only_begins, "{s}");
        }
        for s in ["BEGIN NOT ATOMIC SELECT 1; END", "BEGIN; INSERT INTO t VALUES (1)", "/*!40101 BEGIN */", "COMMIT", "SET @x = 1"] {
            assert!(!analyse(s.as_bytes()).only_begins, "{s}");
        }
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
            "/*M!999999 SELECT */ COMMIT",
            "/*!99999 SELECT */ COMMIT",
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
        assert_eq!(analyse(b"SELECT 1 INTO @`x``y`").pins, Pins::USER_VARIABLES);
        assert_eq!(analyse(b"SELECT @'it''s'").pins, Pins::USER_VARIABLES);
        assert_eq!(analyse(b"HANDLER t OPEN").pins, Pins::HANDLER);
        assert_eq!(analyse(b"HANDLER db.t CLOSE").unpins, Pins::HANDLER);
        assert_eq!(analyse(b"EXECUTE IMMEDIATE 'SELECT GET_LOCK(1, 1)'").pins, Pins::SERVER_STATE);
        assert_eq!(analyse(b"PREPARE s FROM 'SELECT 1'").pins, Pins::SERVER_STATE);
        assert_eq!(analyse(b"SELECT @'a\\b'").pins, Pins::USER_VARIABLES);
        assert_eq!(analyse(b"SELECT @@session.sql_mode, 'a@b'").pins, Pins::NONE);
        assert_eq!(analyse(b"FLUSH TABLES WITH READ LOCK").pins, Pins::TABLE_LOCK);
    }

    #[test]
    fn kills() {
        let k = |s: &str| analyse(s.as_bytes()).kill;
        let kl = |prefix: &str, id: u64, suffix: &str| Some(Kill { prefix: prefix.into(), id, suffix: suffix.into() });
        assert_eq!(k("KILL 42"), kl("KILL ", 42, ""));
        assert_eq!(k("kill query 7"), kl("kill query ", 7, ""));
        assert_eq!(k("KILL HARD CONNECTION 9"), kl("KILL HARD CONNECTION ", 9, ""));
        assert_eq!(k("/*!50000 KILL QUERY 9 */"), kl("/*!50000 KILL QUERY ", 9, " */"));
        assert_eq!(k("KILL QUERY ID 9"), None);
        assert_eq!(k("KILL QUERY (9)"), kl("KILL QUERY (", 9, ")"));
        assert_eq!(k("KILL '9'"), kl("KILL ", 9, ""));
        assert_eq!(k("KILL 0x1f"), kl("KILL ", 31, ""));
        assert_eq!(k("KILL 9 + 1"), None);
        assert_eq!(k("KILL CONNECTION_ID()"), None);
        assert_eq!(k("KILL 1; KILL 2"), None);
        assert_eq!(k("KILL USER app"), None);
    }

    #[test]
    fn wrapped_statements_tracking_and_defaults() {
        let a = analyse(b"SET STATEMENT max_statement_time=0 FOR CALL p('x')");
        assert!(!a.refusal_proves_unexecuted && a.may_end_transaction && a.set_statement);
        let a = analyse(b"SET STATEMENT max_statement_time=0 FOR INSERT INTO t VALUES (1)");
        assert!(a.refusal_proves_unexecuted && !a.may_end_transaction);
        assert!(!analyse(b"SET STATEMENT a=1, b=2, c=3").refusal_proves_unexecuted);
        let long = b"SET STATEMENT max_statement_time=+0, lock_wait_timeout=+5, sql_select_limit=1, max_join_size=1000000, long_query_time=1 FOR CALL p('x')";
        assert!(!analyse(long).refusal_proves_unexecuted);
        assert!(!analyse(b"/*M!999999 SELECT */ CALL p('x')").refusal_proves_unexecuted);
        let flush = b"FLUSH TABLES t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12 WITH READ LOCK";
        assert_eq!(analyse(flush).pins, Pins::TABLE_LOCK);
        assert_eq!(analyse(b"SET @@session.session_track_system_variables=''").touches_tracking, 1);
        assert_eq!(analyse(b"set session_track_state_change=1").touches_tracking, 4);
        assert_eq!(analyse(b"SET timestamp = DEFAULT, @@session.sql_mode := DEFAULT, x = 1").defaulted, vec!["timestamp", "sql_mode"]);
    }

    #[test]
    fn linear_in_time_and_constant_in_memory() {
        let mut q = b"SELECT 0".to_vec();
        for i in 0..60_000 {
            q.extend_from_slice(format!(",@v{i}").as_bytes());
        }
        let t = std::time::Instant::now();
        assert_eq!(analyse(&q).pins, Pins::USER_VARIABLES);
        let many = b"x;".repeat(1 << 20);
        assert!(analyse(&many).multi);
        assert!(t.elapsed() < std::time::Duration::from_secs(30), "quadratic? {:?}", t.elapsed());
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = analyse(&data);
        }
    }
}
