//! The statement lexer's answers (may it commit, does a read-only refusal prove
//! nothing ran, what pins) on inputs an adversarial review found misread.
use baton_proxy::sql::{analyse, Pins};

#[test]
fn review2_sql_cases() {
    let mut bad = Vec::new();
    let mut check = |what: &str, ok: bool| {
        if !ok {
            bad.push(what.to_string());
        }
    };
    // Version-gated executable comments the server ignores (version above its own).
    let a = analyse(b"/*M!999999 SELECT */ COMMIT");
    check("/*M!999999 SELECT */ COMMIT may end a transaction", a.may_end_transaction);
    let a = analyse(b"/*!99999 SELECT */ COMMIT");
    check("/*!99999 SELECT */ COMMIT may end a transaction", a.may_end_transaction);
    let a = analyse(b"/*M!999999 SELECT */ CALL p()");
    check("/*M!999999 SELECT */ CALL p(): refusal does not prove unexecuted", !a.refusal_proves_unexecuted);
    // SET STATEMENT with FOR as the 24th token: the wrapped statement is not kept.
    let q = b"SET STATEMENT max_statement_time=+0, lock_wait_timeout=+5, sql_select_limit=1, max_join_size=1000000, long_query_time=1 FOR CALL p()";
    let a = analyse(q);
    check("SET STATEMENT (FOR is token 24) FOR CALL p(): refusal does not prove unexecuted", !a.refusal_proves_unexecuted);
    // FLUSH TABLES ... WITH READ LOCK past 24 tokens.
    let a = analyse(b"FLUSH TABLES t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12 WITH READ LOCK");
    check("FLUSH TABLES <12 tables> WITH READ LOCK pins TABLE_LOCK", a.pins.contains(Pins::TABLE_LOCK));
    let a = analyse(b"FLUSH TABLES t1 WITH READ LOCK");
    check("FLUSH TABLES t1 WITH READ LOCK pins", a.pins.contains(Pins::TABLE_LOCK));
    // KILL inside an executable comment: prefix keeps the comment open.
    let a = analyse(b"/*!50000 KILL QUERY 123 */");
    println!("kill in comment: {:?}", a.kill);
    for s in ["KILL 0b101", "KILL 9.0", "KILL 1e1", "KILL QUERY 12 /* trailing */"] {
        println!("{s}: {:?}", analyse(s.as_bytes()).kill);
    }
    // Non-ASCII and long words.
    let a = analyse("SELECT 'é'; COMMIT".as_bytes());
    check("non-ascii then COMMIT may end", a.may_end_transaction);
    let a = analyse("ÉÉÉ COMMIT".as_bytes());
    check("non-ascii first word may end", a.may_end_transaction);
    for b in &bad {
        println!("FAIL: {b}");
    }
    assert!(bad.is_empty(), "{bad:#?}");
}
