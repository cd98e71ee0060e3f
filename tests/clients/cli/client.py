#!/usr/bin/env python3
"""The CLI driver program of the client matrix: the `mariadb` command-line client (one
process a statement batch, as scripts use it), plus `tools`: mariadb-dump of a schema
through baton against a direct dump, and mariadb-admin ping|status|processlist.
Speaks run.py's protocol (see the top of run.py)."""
import json, os, re, signal, subprocess, sys, time

E = os.environ
NAME = E.get("CL_NAME", "cli")
PORTS = {"baton": E["CL_BATON_PORT"], "direct": E["CL_DIRECT_PORT"]}
LOGIN = ["-h" + E["CL_HOST"], "--protocol=TCP", "-u" + E["CL_USER"], "-p" + E["CL_PASSWORD"]]


def out(**kw):
    sys.stdout.write(json.dumps(kw, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def mariadb(sql, target="baton", extra=(), timeout=60):
    r = subprocess.run(["mariadb", *LOGIN, "-P" + PORTS[target], "--batch", "--default-character-set=utf8mb4", *extra, E["CL_DB"], "-e", sql],
                       capture_output=True, timeout=timeout)
    return r.returncode, text(r.stdout), text(r.stderr).strip()


def text(b):
    return b.decode("utf-8", "backslashreplace")


def code_of(stderr):
    m = re.search(r"ERROR (\d+)", stderr)
    return int(m.group(1)) if m else 0


def check(target):
    for line in open(E["CL_CASES"], encoding="utf-8"):
        if line.startswith("#") or not line.strip():
            continue
        name, mode, sql, *params = line.rstrip("\n").split("\t")
        if mode == "prep":
            out(case=name, out="n/a: the CLI has no prepared-statement API")
            continue
        rc, o, e = mariadb(sql.replace("{t}", f"cl_{NAME}"), target, ["--column-type-info"])
        out(case=name, out={"rc": rc, "stdout": o, "stderr": e})
    t = f"cl_{NAME}_types"
    # LOAD DATA LOCAL INFILE: the server asks for the file mid-command, the client sends it.
    path = os.path.join(E.get("CL_WORK", "/tmp"), f"infile-{target}.csv")
    with open(path, "w") as f:
        f.write("40,infile a\n41,infile b\n42,\\N\n")
    rc, o, e = mariadb(f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE {t} FIELDS TERMINATED BY ',' (id, s); "
                       f"SELECT id, s FROM {t} WHERE id >= 40 ORDER BY id", target, ["--local-infile=1"])
    out(case="local_infile", out={"rc": rc, "stdout": o, "stderr": e})
    rc, o, e = mariadb(f"SET autocommit=0; INSERT INTO {t} (id) VALUES (10); ROLLBACK; INSERT INTO {t} (id) VALUES (11); COMMIT; "
                       f"SELECT id FROM {t} WHERE id IN (10, 11)", target)
    out(case="tx", out={"rc": rc, "stdout": o, "stderr": e})


def timed_proc(sql):
    return subprocess.Popen(["mariadb", *LOGIN, "-P" + PORTS["baton"], "--batch", "--skip-column-names", E["CL_DB"], "-e", sql],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), time.monotonic()


def finish(p, t0):
    o, e = p.communicate(timeout=30)
    ms = int((time.monotonic() - t0) * 1000)
    return {"value": o.strip() or None, "error": code_of(e) or (None if p.returncode == 0 else -p.returncode), "ms": ms}


def cancel():
    # Ctrl-C on `mariadb` sends KILL QUERY <its connection id> from a new connection.
    by, tb = timed_proc("SELECT SLEEP(2)")
    vi, tv = timed_proc("SELECT SLEEP(5)")
    time.sleep(0.7)
    vi.send_signal(signal.SIGINT)
    victim, bystander = finish(vi, tv), finish(by, tb)
    out(case="kill", out={"victim": victim, "bystander": bystander, "after": None})
    out(case="timeout", out={"skip": "the CLI has no query timeout; Ctrl-C (KILL QUERY) is the kill case"})


def op(kind, seq, gtid=False):
    ins = lambda s: f"INSERT INTO cl_rows (driver, seq, kind) VALUES ('{NAME}', {s}, '{kind}')"
    sql = {"text": ins(seq),
           "prep": f"PREPARE s FROM \"INSERT INTO cl_rows (driver, seq, kind) VALUES ('{NAME}', {seq}, 'prep')\"; EXECUTE s",
           "tx": f"BEGIN; {ins(seq)}; {ins(-seq)}; COMMIT"}[kind]
    rc, o, e = mariadb(sql + ("; SELECT @@last_gtid" if gtid else ""), extra=["--skip-column-names"])
    if rc != 0:
        raise RuntimeError(code_of(e), e)
    return o.strip()


def write(stop):
    kinds, seq = ["text", "prep", "tx"], 0
    while not os.path.exists(stop):
        seq += 1
        k = kinds[seq % 3]
        try:
            op(k, seq)
            out(ack=seq, k=k)
        except RuntimeError as e:
            out(fail=seq, k=k, code=e.args[0], msg=e.args[1], t=int(time.time() * 1000))


DUMP_SCHEMA = """DROP DATABASE IF EXISTS cl_dump; CREATE DATABASE cl_dump DEFAULT CHARSET utf8mb4; USE cl_dump;
CREATE TABLE t (id INT PRIMARY KEY AUTO_INCREMENT, s VARCHAR(20), d DECIMAL(8,2), dt DATETIME(3), b BLOB, j JSON, KEY (s)) ;
INSERT INTO t (s, d, dt, b, j) VALUES ('a', 1.5, '2024-01-02 03:04:05.678', x'00ff', '{"k": 1}'), ('héllo', NULL, NULL, NULL, NULL), ('quote''s', -2, '1999-12-31 23:59:59', '', '[]');
CREATE TABLE child (id INT PRIMARY KEY, t_id INT, FOREIGN KEY (t_id) REFERENCES t (id));
INSERT INTO child VALUES (1, 1);
CREATE VIEW v AS SELECT id, s FROM t WHERE d > 0;
CREATE PROCEDURE p(IN x INT) SELECT x * 2 AS y"""


def tools():
    rc, o, e = mariadb(DUMP_SCHEMA)
    if rc:
        out(problem=f"creating cl_dump: {e}")
    dumps = {}
    for target in ("direct", "baton"):
        r = subprocess.run(["mariadb-dump", *LOGIN, "-P" + PORTS[target], "--routines", "--triggers", "--databases", "cl_dump"],
                           capture_output=True, timeout=60)
        if r.returncode:
            out(problem=f"mariadb-dump {target}: exit {r.returncode}: {text(r.stderr).strip()}")
        dumps[target] = [l for l in text(r.stdout).splitlines() if not l.startswith("-- Dump completed on")]
    diff = [(a, b) for a, b in zip(dumps["direct"], dumps["baton"]) if a != b]
    if len(dumps["direct"]) != len(dumps["baton"]):
        out(problem=f"mariadb-dump: {len(dumps['direct'])} lines directly, {len(dumps['baton'])} through baton")
    for a, b in diff:
        if a.startswith("-- Server version") and b.startswith("-- Server version"):
            # baton greets with its own server.server_version, not the backend's.
            out(note=f"mariadb-dump header: direct {a!r} / baton {b!r}")
        else:
            out(problem=f"mariadb-dump differs: direct {a!r} / baton {b!r}")
    out(note=f"mariadb-dump: {len(dumps['baton'])} lines, {len(diff)} differing (the date line left out)")
    for cmd, want in (("ping", "mysqld is alive"), ("status", "Uptime:"), ("processlist", "Id")):
        r = subprocess.run(["mariadb-admin", *LOGIN, "-P" + PORTS["baton"], cmd], capture_output=True, text=True, timeout=30)
        if r.returncode or want not in r.stdout:
            out(problem=f"mariadb-admin {cmd}: exit {r.returncode}: {r.stdout.strip()} {r.stderr.strip()}")
        else:
            out(note=f"mariadb-admin {cmd}: {r.stdout.strip().splitlines()[0][:80]}")


def probe(path):
    """No idle session here (one connection per statement batch): a new connection
    made when PATH appears (right after the crash) must be held, then answered."""
    while not os.path.exists(path):
        time.sleep(0.005)
    t0 = time.monotonic()
    rc, o, e = mariadb("SELECT 1", extra=["--skip-column-names"])
    out(probe={"value": o.strip() or None, "error": code_of(e) or (None if rc == 0 else rc), "ms": int((time.monotonic() - t0) * 1000),
               "login": True})


def main():
    v = subprocess.run(["mariadb", "--version"], capture_output=True, text=True).stdout
    m = re.search(r"(?:Distrib|from) ([\d.]+-MariaDB)", v)
    out(driver=NAME, version=m.group(1) if m else v.strip())
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
                out(gtid=op(args[0], 0, gtid=True))
            elif cmd == "write":
                write(args[0])
            elif cmd == "probe":
                probe(args[0])
            elif cmd == "tools":
                tools()
        except Exception as e:
            out(error=f"{cmd}: {type(e).__name__}: {e}")
        out(done=cmd)


main()
