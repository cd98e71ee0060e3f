#!/usr/bin/env python3
"""The Python driver program of the client matrix (tests/clients/run.py speaks to it):
one program for the four DB-API drivers, `client.py pymysql|mysqlclient|mysqlconnector|mariadb`.
Reads commands on stdin, answers in JSON lines (protocol: the top of run.py)."""
import json, os, sys, threading, time

DRIVER = sys.argv[1]
E = os.environ
HOST, USER, PASSWORD, DB = E["CL_HOST"], E["CL_USER"], E["CL_PASSWORD"], E["CL_DB"]
PORTS = {"baton": int(E["CL_BATON_PORT"]), "direct": int(E["CL_DIRECT_PORT"])}
NAME = E.get("CL_NAME", DRIVER)

if DRIVER == "pymysql":
    import pymysql as db
    from pymysql.constants import CLIENT
    VERSION, QMARK, MULTI = db.__version__, False, {"client_flag": CLIENT.MULTI_STATEMENTS}
elif DRIVER == "mysqlclient":
    import MySQLdb as db
    VERSION, QMARK, MULTI = ".".join(map(str, db.version_info[:3])), False, {}  # multi-statements on by default
elif DRIVER == "mysqlconnector":
    import mysql.connector as db
    import mysql.connector.pooling
    VERSION, QMARK, MULTI = db.__version__, True, {"use_pure": True}
elif DRIVER == "mariadb":
    import mariadb as db
    import mariadb.constants
    from mariadb.constants import CLIENT
    VERSION, QMARK, MULTI = db.__version__, True, {"client_flag": CLIENT.MULTI_STATEMENTS}


def out(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def connect(target="baton", **extra):
    kw = dict(host=HOST, port=PORTS[target], user=USER, password=PASSWORD, database=DB, **MULTI)
    kw.update(extra)
    return db.connect(**kw)


def pool(target="baton", **extra):
    """The driver's own pool, where it has one (else None)."""
    kw = dict(host=HOST, port=PORTS[target], user=USER, password=PASSWORD, database=DB, **extra)
    if DRIVER == "mysqlconnector":
        return mysql.connector.pooling.MySQLConnectionPool(pool_name=f"p{time.monotonic_ns()}", pool_size=3, use_pure=True, **kw)
    if DRIVER == "mariadb":
        return db.ConnectionPool(pool_name=f"p{time.monotonic_ns()}", pool_size=3, **kw)
    return None


def borrow(p):
    return p.get_connection()


def thread_id(c):
    if DRIVER == "pymysql":
        return c.thread_id()
    if DRIVER == "mysqlclient":
        return c.thread_id()
    return c.connection_id


def code(e):
    a = getattr(e, "errno", None) or (e.args[0] if e.args and isinstance(e.args[0], int) else 0)
    return a or 0


def value(v):
    if isinstance(v, (bytes, bytearray)):
        return "0x" + bytes(v).hex()
    return None if v is None else str(v)


def param(p):
    kind, v = p.split(":", 1)
    return {"i": int, "d": float, "s": str, "b": bytes.fromhex, "n": lambda _: None}[kind](v)


def results(cur):
    """Every result of the statement just run: rows with column names, or a row count."""
    res = []
    while True:
        if cur.description:
            cols = [d[0] for d in cur.description]
            res.append({"cols": cols, "rows": [[value(v) for v in r] for r in cur.fetchall()]})
        else:
            res.append({"affected": cur.rowcount})
        if not cur.nextset():
            return res


def run_case(c, mode, sql, params):
    if mode == "prep":
        cur = c.cursor(prepared=True) if DRIVER == "mysqlconnector" else c.cursor()
        cur.execute(sql if QMARK else sql.replace("?", "%s"), tuple(params))
    elif mode == "multi" and DRIVER == "mysqlconnector":
        cur = c.cursor()
        cur.execute(sql, map_results=True)
    else:
        cur = c.cursor()
        cur.execute(sql)
    r = results(cur)
    cur.close()
    return r


def check(target):
    c = connect(target)
    for line in open(E["CL_CASES"], encoding="utf-8"):
        if line.startswith("#") or not line.strip():
            continue
        name, mode, sql, *params = line.rstrip("\n").split("\t")
        sql = sql.replace("{t}", f"cl_{NAME}")
        try:
            out(case=name, out=run_case(c, mode, sql, [param(p) for p in params]))
        except db.Error as e:
            out(case=name, out={"error": code(e), "msg": str(e.args[-1]) if e.args else str(e)})
            if not 1000 <= code(e) < 2000:  # not the server's error: the connection may be unusable
                c = connect(target)
        except Exception as e:  # the driver's own failure (decoding, parsing): start afresh
            out(case=name, out={"exception": f"{type(e).__name__}: {e}"})
            c = connect(target)
    t = f"cl_{NAME}_types"
    # executemany: a multi-row INSERT (PyMySQL, mysqlclient), one execute per row
    # (mysql-connector), COM_STMT_BULK_EXECUTE (MariaDB Connector/Python).
    cur = c.cursor()
    ins = f"INSERT INTO {t} (id, s) VALUES (?, ?)"
    cur.executemany(ins if DRIVER == "mariadb" else ins.replace("?", "%s"), [(20, "a"), (21, "b"), (22, None)])
    out(case="batch", out=[cur.rowcount, run_case(c, "text", f"SELECT id, s FROM {t} WHERE id >= 20 ORDER BY id", [])])
    if DRIVER == "mariadb":
        # A server-side cursor (COM_STMT_FETCH, two rows at a time).
        cur = c.cursor(cursor_type=db.constants.CURSOR.READ_ONLY, prefetch_size=2)
        cur.execute(f"SELECT id, s FROM {t} WHERE id > ? ORDER BY id", (0,))
        out(case="cursor", out=[[value(v) for v in r] for r in cur.fetchall()])
        cur.close()
    # Transactions through the DB-API: autocommit off, rollback, commit.
    c.autocommit(False) if DRIVER in ("pymysql", "mysqlclient") else setattr(c, "autocommit", False)
    cur = c.cursor()
    cur.execute(f"INSERT INTO {t} (id) VALUES (10)")
    c.rollback()
    cur.execute(f"INSERT INTO {t} (id) VALUES (11)")
    c.commit()
    cur.execute(f"SELECT id FROM {t} WHERE id IN (10, 11)")
    out(case="tx", out=[r[0] for r in cur.fetchall()])
    c.close()
    # Ping; the pool (validation, reset on return) where the driver has one.
    c = connect(target)
    c.ping()
    if DRIVER == "mariadb":
        cur = c.cursor()
        cur.execute("SET SESSION wait_timeout = 77")
        c.reset()  # COM_RESET_CONNECTION
        cur.execute("SELECT @@session.wait_timeout = @@global.wait_timeout")
        out(case="reset", out=cur.fetchall()[0][0])
    c.close()
    p = pool(target)
    if p is not None:
        seen = []
        for _ in range(4):
            pc = borrow(p)
            cur = pc.cursor()
            cur.execute("SELECT @@session.wait_timeout = @@global.wait_timeout, DATABASE()")
            seen.append([value(v) for v in cur.fetchall()[0]])
            cur.execute("SET SESSION wait_timeout = 55")
            cur.close()
            pc.close()  # back to the pool, reset there
        out(case="pool", out=seen)


def timed(fn):
    t0 = time.monotonic()
    try:
        v, err = fn(), None
    except db.Error as e:
        v, err = None, code(e)
    return {"value": value(v), "error": err, "ms": int((time.monotonic() - t0) * 1000)}


def scalar(c, sql):
    cur = c.cursor()
    cur.execute(sql)
    v = cur.fetchall()[0][0]
    cur.close()
    return v


def cancel():
    # KILL QUERY <the id from the handshake> from a second connection, while a
    # bystander sleeps on a third: only the victim's statement may end early.
    victim, bystander, killer = connect(), connect(), connect()
    res, vid = {}, thread_id(victim)
    tb = threading.Thread(target=lambda: res.update(bystander=timed(lambda: scalar(bystander, "SELECT SLEEP(2)"))))
    tb.start()
    tk = threading.Timer(0.5, lambda: scalar(killer, "SELECT 1") and killer.cursor().execute(f"KILL QUERY {vid}"))
    tk.start()
    res["victim"] = timed(lambda: scalar(victim, "SELECT SLEEP(5)"))
    tb.join(), tk.join()
    res["after"] = value(scalar(victim, "SELECT 1"))
    out(case="kill", out=res)
    # The driver's own timeout: a read timeout of 1 s on a connection of its own.
    if DRIVER == "mysqlconnector":
        c = connect()  # kept: the cursor holds only a weak reference
        cur = c.cursor(read_timeout=1)  # seconds, per cursor
        r = timed(lambda: (cur.execute("SELECT SLEEP(5)"), cur.fetchall())[1][0][0])
    else:
        c = connect(read_timeout=1)
        r = timed(lambda: scalar(c, "SELECT SLEEP(5)"))
    r["after"] = value(scalar(connect(), "SELECT 1"))
    out(case="timeout", out=r)


class Writer:
    """One connection (or the pool's) that writes rows (driver, seq, kind) to cl_rows."""

    def __init__(self):
        self.pool, self.conn = pool(autocommit=True), None

    def get(self):
        if self.pool is not None:
            return borrow(self.pool)
        if self.conn is None:
            self.conn = connect(autocommit=True)
        return self.conn

    def put(self, c, broken):
        if self.pool is not None:
            try:
                c.close()
            except db.Error:
                pass
        elif broken:
            try:
                c.close()
            except Exception:
                pass
            self.conn = None

    def op(self, kind, seq, gtid=False):
        c = self.get()
        broken, cur = False, None
        try:
            cur = c.cursor(prepared=True) if kind == "prep" and DRIVER == "mysqlconnector" else c.cursor()
            ins = "INSERT INTO cl_rows (driver, seq, kind) VALUES (%s, %s, %s)"
            if kind == "text":
                cur.execute(f"INSERT INTO cl_rows (driver, seq, kind) VALUES ('{NAME}', {seq}, 'text')")
            elif kind == "prep":
                cur.execute(ins.replace("%s", "?") if QMARK else ins, (NAME, seq, "prep"))
            else:
                cur.execute("BEGIN")
                try:
                    cur.execute(f"INSERT INTO cl_rows (driver, seq, kind) VALUES ('{NAME}', {seq}, 'tx')")
                    cur.execute(f"INSERT INTO cl_rows (driver, seq, kind) VALUES ('{NAME}', {-seq}, 'tx')")
                    c.commit()
                except db.Error:
                    try:
                        c.rollback()
                    except db.Error:
                        pass
                    raise
            if gtid:
                cur.execute("SELECT @@last_gtid")
                return cur.fetchall()[0][0]
        except db.Error as e:
            broken = code(e) == 0 or 2000 <= code(e) < 3000
            raise
        finally:
            if cur is not None:
                try:
                    cur.close()
                except Exception:
                    pass
            self.put(c, broken)


def write(w, stop):
    kinds, seq = ["text", "prep", "tx"], 0
    while not os.path.exists(stop):
        seq += 1
        k = kinds[seq % 3]
        try:
            w.op(k, seq)
            out(ack=seq, k=k)
        except db.Error as e:
            # A driver-side error (no server code) names its cause: where the driver gave up.
            cause = ""
            if code(e) <= 0:
                import traceback
                where = " < ".join(f"{f.name}:{f.lineno}" for f in reversed(traceback.extract_tb(e.__traceback__)[-4:]))
                cause = f" ({type(e).__name__} at {where}; cause: {e.__cause__!r})"
            out(fail=seq, k=k, code=code(e), msg=str(e) + cause, t=int(time.time() * 1000))
        time.sleep(0.01)


def probe(path):
    """A session left idle until PATH exists (run.py makes it right after the crash), then SELECT 1."""
    c = connect(autocommit=True)
    scalar(c, "SELECT 1")
    while not os.path.exists(path):
        time.sleep(0.005)
    out(probe=timed(lambda: scalar(c, "SELECT 1")))


def main():
    out(driver=NAME, version=VERSION)
    w = None
    for line in sys.stdin:
        cmd, *args = line.split()
        try:
            if cmd == "quit":
                break
            if cmd == "check":
                check(args[0])
            elif cmd == "cancel":
                cancel()
            elif cmd == "gtid":
                w = w or Writer()
                out(gtid=w.op(args[0], 0, gtid=True))
            elif cmd == "probe":
                probe(args[0])
            elif cmd == "write":
                w = w or Writer()
                write(w, args[0])
        except Exception as e:  # reported, and the runner counts it as a failed check
            out(error=f"{cmd}: {type(e).__name__}: {e}")
        out(done=cmd)


main()
