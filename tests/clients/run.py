#!/usr/bin/env python3
"""The client-driver compatibility matrix: runs one program per driver (Java, Python,
Node.js, PHP, Go, Ruby, Rust, the mariadb CLI tools) through a running baton, one
planned reparent and one crash of the primary shared by all, and checks, per driver:

  1 queries   every case of cases.tsv plus the driver's transaction, ping, pool and
              reset APIs give the same answers through baton as directly;
  2 reparent  writes go on through a planned reparent: no error outside transactions,
              transaction errors only the documented ones (9101, 9105);
  3 cancel    KILL QUERY <the driver's connection id> ends that query and no other
              one; the driver's own timeout API works;
  4 gtids     baton's acknowledged GTID position becomes the GTID of the driver's
              write (text, prepared, transaction), before the reparent and again
              after the crash: the C4 protection holds for it;
  5 crash     the primary SIGKILLed (auto_failover): only 9101/9105 errors, the
              driver's pool or connection writes again, and a session idle at the
              crash runs SELECT 1 (sent 0.1 s after the kill) without an error;
              then a quiet crash (nobody writing): a session idle on the primary
              sends SELECT 1 50 ms after its SIGKILL: held, then run, no error;
and for 2 and 5 together: every acknowledged row is on the new primary exactly once,
no row of a definite failure is. Also: mariadb-dump through baton equals a direct
dump; mariadb-admin ping, status and processlist work through baton.

Usage (baton with durability = "semi_sync", auto_failover = true, an admin token):
  python3 tests/clients/run.py --baton 127.0.0.1:6033 --admin 127.0.0.1:6034 \
      --token TOKEN --cluster-info CLUSTER.json [--rust-bin PATH] [--write-readme]
Exit 0 when every check of every driver passed; the summary (JSON) goes to --summary.

Driver protocol. A driver program gets CL_NAME, CL_HOST, CL_BATON_PORT, CL_DIRECT_PORT,
CL_USER, CL_PASSWORD, CL_DB, CL_CASES in its environment, prints {"driver", "version"}
first, then reads commands from stdin, one a line, and ends each answer with
{"done": CMD}. Every other answer is one JSON object a line:
  check direct|baton   {"case": NAME, "out": ...} for each case of cases.tsv (a list of
                       results, {"cols", "rows"} or {"affected"}; or {"error": code})
                       and for the driver's own API cases (tx, pool, reset, ...)
  cancel               {"case": "kill"|"timeout", "out": {"victim"|..: {"value",
                       "error", "ms"}, "after"}} or "out": {"skip": why}
  gtid text|prep|tx    one write (seq 0) through baton, then {"gtid": @@last_gtid}
  write STOPFILE       writes rows (CL_NAME, seq, kind) into baton_test.cl_rows, kinds
                       text, prep, tx in turn (tx: rows seq and -seq in one transaction),
                       until STOPFILE exists: {"ack": seq, "k"} or {"fail": seq, "k",
                       "code", "msg", "t": epoch ms}
  probe FILE           opens a session, leaves it idle until FILE exists (made right
                       after a SIGKILL), then SELECT 1: {"probe": {"value", "error",
                       "ms"}} (a second instance of the program does this, so that it
                       can while the first one writes)
  quit
Values are strings as the driver gives them (bytes as 0x-hex), NULL as null.
"""
import argparse, json, os, queue, re, shutil, signal, subprocess, sys, tempfile, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "tests", "clients")
JAR = "/usr/share/java/mariadb-java-client.jar"
ROWS_AFTER = 20  # acknowledged writes each driver must make in each phase
CHECKS = ["queries", "reparent", "cancel", "gtids", "crash"]


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def drivers(args, build):
    """(name, language, label, command, build step or None) for every driver."""
    py = lambda d: [sys.executable, os.path.join(HERE, "python", "client.py"), d]
    php = lambda d: ["php", os.path.join(HERE, "php", "client.php"), d]
    gobin = os.path.join(build, "go-client")
    javac = ["javac", "-cp", JAR, "-d", os.path.join(build, "java"), os.path.join(HERE, "java", "Client.java")]
    gobuild = ["go", "build", "-o", gobin, os.path.join(HERE, "go", "client.go")]
    d = [
        ("connectorj", "Java", "MariaDB Connector/J", ["java", "-cp", f"{JAR}:{build}/java", "Client"], javac),
        ("pymysql", "Python", "PyMySQL", py("pymysql"), None),
        ("mysqlclient", "Python", "mysqlclient (Connector/C)", py("mysqlclient"), None),
        ("mysqlconnector", "Python", "mysql-connector-python (pure)", py("mysqlconnector"), None),
        ("mariadbpy", "Python", "MariaDB Connector/Python", py("mariadb"), None),
        ("mysql2node", "Node.js", "mysql2", ["node", os.path.join(HERE, "node", "client.js")], None),
        ("pdo", "PHP", "mysqlnd (PDO)", php("pdo"), None),
        ("mysqli", "PHP", "mysqlnd (mysqli)", php("mysqli"), None),
        ("gosql", "Go", "go-sql-driver/mysql", [gobin], gobuild),
        ("mysql2ruby", "Ruby", "mysql2", ["ruby", os.path.join(HERE, "ruby", "client.rb")], None),
        ("mysqlasync", "Rust", "mysql_async", [args.rust_bin or "", "mysql_async"], None),
        ("cli", "CLI", "mariadb, mariadb-dump, mariadb-admin", [sys.executable, os.path.join(HERE, "cli", "client.py")], None),
    ]
    return [x for x in d if not args.drivers or x[0] in args.drivers.split(",")]


class Admin:
    def __init__(self, addr, token):
        self.base, self.token = f"http://{addr}", token

    def req(self, method, path, body=None, timeout=120):
        r = urllib.request.Request(self.base + path, method=method, data=body.encode() if body is not None else None)
        if self.token:
            r.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(r, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def status(self):
        return self.req("GET", "/api/v1/clusters/main")[1]

    def acked(self):
        return self.status()["acknowledged_gtids"]


def sql(port, statements, user="app", password="app"):
    """Run statements with PyMySQL (the runner's own tool); returns the last one's rows."""
    import pymysql
    c = pymysql.connect(host="127.0.0.1", port=port, user=user, password=password, database="baton_test", autocommit=True)
    try:
        cur = c.cursor()
        for s in statements:
            cur.execute(s)
        return cur.fetchall()
    finally:
        c.close()


class Proc:
    """One driver program: its answers (a queue), and its writes as they come."""

    def __init__(self, name, cmd, env, logdir):
        self.name, self.acks, self.fails, self.noise, self.probe, self.quiet_probe = name, [], [], [], None, None
        self.err = open(os.path.join(logdir, f"{name}.stderr"), "w")
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True, bufsize=1, env=env, cwd=ROOT)
        self.q = queue.Queue()
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        for line in self.p.stdout:
            try:
                o = json.loads(line)
            except ValueError:
                self.noise.append(line.rstrip())
                continue
            if "ack" in o:
                self.acks.append((time.time(), o["ack"], o["k"]))
            elif "fail" in o:
                self.fails.append(o)
            elif "probe" in o:
                self.probe = o["probe"]
            else:
                self.q.put(o)
        self.q.put({"done": "EOF"})

    def send(self, cmd):
        try:
            self.p.stdin.write(cmd + "\n")
            self.p.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def answer(self, timeout):
        """Everything up to {"done"}; a last {"error"} when the program died or hung."""
        got, deadline = [], time.time() + timeout
        while True:
            try:
                o = self.q.get(timeout=max(0.1, deadline - time.time()))
            except queue.Empty:
                got.append({"error": f"no answer within {timeout} s"})
                return got
            if o.get("done") == "EOF":
                got.append({"error": f"the program ended (exit {self.p.poll()}); {' | '.join(self.noise[-3:])}"})
                self.q.put(o)
                return got
            if "done" in o:
                return got
            got.append(o)

    def acks_since(self, t):
        return sum(1 for a in self.acks if a[0] >= t)


def build_all(ds):
    def one(d):
        if d[4] is None:
            return d[0], None
        env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode", GOFLAGS="")
        r = subprocess.run(d[4], cwd=ROOT, env=env, capture_output=True, text=True)
        return d[0], None if r.returncode == 0 else (r.stdout + r.stderr)[-2000:]

    out = {}
    ts = [threading.Thread(target=lambda d=d: out.update([one(d)])) for d in ds]
    [t.start() for t in ts]
    [t.join() for t in ts]
    return out


def short(v, n=300):
    s = json.dumps(v, ensure_ascii=False)
    return s if len(s) <= n else s[:n] + f"... ({len(s)} chars)"


def bulk_counts(direct, baton):
    """Connector/J's executeBatch with useBulkStmts: COM_STMT_BULK_EXECUTE directly
    (SUCCESS_NO_INFO, -2, per row), one COM_STMT_EXECUTE per row through baton (1 per
    row), which offers no MARIADB_CLIENT_STMT_BULK_OPERATIONS; the rows are the same."""
    return direct[:3] == [-2] * 3 and baton[:3] == [1] * 3 and direct[3:] == baton[3:]


# Differences that are baton's documented behaviour, each matched exactly: (driver, case) -> (test, note).
KNOWN = {("connectorj", "batch/server"): (bulk_counts, "executeBatch: no COM_STMT_BULK_EXECUTE through baton (not offered), counts 1 not -2")}


def compare(name, direct, baton):
    """Case-by-case differences between the direct and the baton run; and notes."""
    diffs, notes = [], []
    d = {o["case"]: o["out"] for o in direct if "case" in o}
    b = {o["case"]: o["out"] for o in baton if "case" in o}
    for target, run in (("direct", direct), ("baton", baton)):
        diffs += [f"program error ({target}): {o['error']}" for o in run if "error" in o and "case" not in o]
    # Connection ids differ by nature (Connector/J puts them in its messages).
    same = lambda x: re.sub(r"conn=\d+", "conn=N", json.dumps(x, ensure_ascii=False))
    for case in list(d) + [c for c in b if c not in d]:
        if same(d.get(case)) != same(b.get(case)):
            test, note = KNOWN.get((name, case), (None, None))
            if test and test(d.get(case), b.get(case)):
                notes.append(f"known difference: {note}")
            else:
                diffs.append(f"{case}: direct {short(d.get(case))} / baton {short(b.get(case))}")
    return diffs, notes, sorted(d)


def judge_cancel(answers):
    problems, notes = [], []
    got = {o["case"]: o["out"] for o in answers if "case" in o}
    problems += [o["error"] for o in answers if "error" in o and "case" not in o]
    k = got.get("kill")
    if k is None:
        problems.append("no kill result")
    else:
        v, b = k["victim"], k["bystander"]
        if not (v["error"] == 1317 or v["value"] == "1") or v["ms"] > 4000:
            problems.append(f"KILL QUERY did not end the victim's SLEEP(5): {short(v)}")
        if b["error"] is not None or b["value"] != "0" or b["ms"] < 1900:
            problems.append(f"the bystander's SLEEP(2) was disturbed: {short(b)}")
        if k.get("after") not in ("1", None):
            problems.append(f"the victim's connection after KILL QUERY: {short(k.get('after'))}")
    if "timeout" not in got:
        problems.append("no timeout result")
    # The driver's own timeout or cancel APIs: each must end SLEEP(5) about when asked.
    for case, t in got.items():
        if case == "kill":
            continue
        label = "timeout API" if case == "timeout" else case
        if "skip" in t:
            notes.append(f"{label}: {t['skip']}")
            continue
        if (t["error"] is None and t.get("value") != "1") or not 500 <= t["ms"] <= 4500:
            problems.append(f"{case} did not end SLEEP(5): {short(t)}")
        if t.get("after") != "1":
            problems.append(f"no query after {case}: {short(t)}")
        notes.append(f"{label}: error {t['error']} after {t['ms']} ms")
    return problems, notes


def gtid_phase(proc, admin):
    problems = []
    for kind in ("text", "prep", "tx"):
        before = admin.acked()
        proc.send(f"gtid {kind}")
        ans = proc.answer(30)
        got = [o["gtid"] for o in ans if "gtid" in o]
        after = admin.acked()
        if not got or not got[0]:
            problems.append(f"{kind}: no @@last_gtid from the driver ({short(ans)})")
        elif after != got[0] or after == before:
            problems.append(f"{kind}: wrote {got[0]}, acknowledged position {before!r} -> {after!r}")
    return problems


def primary_pid(info, addr):
    i = info["servers"].index(addr)
    with open(os.path.join(os.path.dirname(info["sockets"][i]), "mariadbd.pid")) as f:
        return int(f.read().strip())


def restart_server(info, addr):
    """Start a killed mariadbd again, detached (as tests/common/reparent.rs `restart`)."""
    i = info["servers"].index(addr)
    cnf = os.path.join(os.path.dirname(info["sockets"][i]), "my.cnf")
    subprocess.Popen(["mariadbd", f"--defaults-file={cnf}", "--user=mysql"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)
    port = int(addr.rsplit(":", 1)[1])
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            sql(port, ["SELECT 1"], "admin", "admin")
            return True
        except Exception:
            time.sleep(0.2)
    return False


def wait_until(what, cond, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    log(f"timed out waiting for {what}")
    return False


def chaos(procs, probers, admin, info, work, res):
    """Every driver writes; one planned reparent, then one SIGKILL of the primary."""
    stop, probe = os.path.join(work, "stop"), os.path.join(work, "probe")
    for p in procs.values():
        p.send(f"write {stop}")
    t0 = time.time()
    enough = lambda t: lambda: all(p.acks_since(t) >= ROWS_AFTER for p in procs.values())
    slow = lambda t: [n for n, p in procs.items() if p.acks_since(t) < ROWS_AFTER]
    marks = {"start": t0 * 1000}
    events = {}
    if not wait_until("writes before the reparent", enough(t0), 60):
        events["stalled_before_reparent"] = slow(t0)
    old = admin.status()["primary"]
    marks["reparent"] = time.time() * 1000
    log(f"reparent from {old}")
    code, report = admin.req("POST", "/api/v1/clusters/main/reparent", "{}")
    t1 = time.time()
    marks["reparent_done"] = t1 * 1000
    events["reparent"] = {"status": code, "outcome": (report or {}).get("outcome"), "ms": int(marks["reparent_done"] - marks["reparent"])}
    log(f"reparent: {events['reparent']}")
    # Sessions on the primary about to be killed, left idle until 0.1 s after the kill.
    for p in probers.values():
        p.send(f"probe {probe}")
    if not wait_until("writes after the reparent", enough(t1), 60):
        events["stalled_after_reparent"] = slow(t1)
    st = admin.status()
    victim, term = st["primary"], st["term"]
    pid = primary_pid(info, victim)
    marks["crash"] = time.time() * 1000
    log(f"SIGKILL {victim} (pid {pid})")
    os.kill(pid, signal.SIGKILL)
    # Each driver's idle session (opened when writing began) runs SELECT 1 now, before the failover ends.
    time.sleep(0.1)
    open(probe, "w").close()
    new = {}
    wait_until("the failover", lambda: new.update(admin.status()) or (new.get("term") or 0) > term, 60)
    t2 = time.time()
    marks["failover_done"] = t2 * 1000
    events["failover"] = {"from": victim, "to": new.get("primary"), "term": new.get("term"), "ms": int(marks["failover_done"] - marks["crash"])}
    log(f"failover: {events['failover']}")
    if not wait_until("writes after the failover", enough(t2), 60):
        events["stalled_after_crash"] = slow(t2)
    open(stop, "w").close()
    for p in procs.values():
        tail = p.answer(60)
        res[p.name]["write_errors"] = [o["error"] for o in tail if "error" in o]
    for name, p in probers.items():
        tail = p.answer(60)
        procs[name].probe = p.probe or {"error": f"no probe answer: {short(tail)}", "value": None}
    threading.Thread(target=lambda: events.update(restarted=restart_server(info, victim)), daemon=True).start()
    return marks, events


def healthy(admin):
    """Every server answers and every replica replicates from the primary, caught up."""
    st = admin.status()
    prim = next((s for s in st["servers"] if s["addr"] == st["primary"]), None)
    return prim is not None and not st["health"]["errant"] and all(
        s["reachable"] and (s is prim or (s.get("replication") or {}).get("source") == st["primary"]
                            and s["replication"].get("io_running") and s["replication"].get("sql_running")
                            and s.get("gtid_position") == prim.get("gtid_position"))
        for s in st["servers"])


def quiet_crash(procs, probers, admin, info, work, events):
    """Nobody writing: each driver's session idle on the primary, the primary SIGKILLed,
    every session's next statement 50 ms later (before the health checks notice)."""
    if not wait_until("the cluster to heal after the first crash", lambda: healthy(admin), 90):
        events["quiet_crash"] = "not run: the cluster did not heal"
        return
    probe = os.path.join(work, "probe-quiet")
    for p in probers.values():
        p.send(f"probe {probe}")
    time.sleep(1.0)
    st = admin.status()
    victim, term = st["primary"], st["term"]
    pid = primary_pid(info, victim)
    log(f"quiet crash: SIGKILL {victim} (pid {pid})")
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.05)
    open(probe, "w").close()
    for name, p in probers.items():
        tail = p.answer(90)
        procs[name].quiet_probe = p.probe if tail == [] else {"error": short(tail), "value": None}
    new = {}
    wait_until("the failover after the quiet crash", lambda: new.update(admin.status()) or (new.get("term") or 0) > term, 60)
    events["quiet_crash"] = {"from": victim, "to": new.get("primary"), "term": new.get("term")}
    log(f"quiet crash: {events['quiet_crash']}")
    events["restarted_quiet"] = restart_server(info, victim)


def judge_writes(procs, marks, events, rows, res):
    have = {}
    for d, s, n in rows:
        have.setdefault(d, {})[s] = n
    for name, p in procs.items():
        r = res[name]
        rep, crash = [], []
        acked = set()
        for _, s, k in p.acks:
            acked.add(s)
            if k == "tx":
                acked.add(-s)
        stalled = [e for e, who in events.items() if e.startswith("stalled") and name in who]
        for f in p.fails:
            where = "before" if f["t"] < marks["reparent"] else "reparent" if f["t"] < marks["crash"] else "crash"
            desc = f"{where}: {f['k']} seq {f['fail']}: {f['code']} {f['msg'][:400]}"
            # The CLI's "prep" is SQL PREPARE then EXECUTE, two statements: a
            # PREPAREd statement pins the session, so a move between them ends it
            # with the documented 9106 (README "Sessions across a move").
            pinned_move = name == "cli" and f["k"] == "prep" and f["code"] == 9106 and where != "before"
            if pinned_move:
                (rep if where == "reparent" else crash).append("note: " + desc)
            elif where == "before" or (where == "reparent" and (f["k"] != "tx" or f["code"] not in (9101, 9105))):
                rep.append("error outside the documented ones: " + desc)
            elif where == "crash" and f["code"] not in (9101, 9105):
                crash.append("error outside the documented ones: " + desc)
            else:
                (rep if where == "reparent" else crash).append("note: " + desc)
        mine = {s: n for s, n in have.get(name, {}).items() if s != 0}  # seq 0: the gtid phase's writes
        lost = sorted(s for s in acked if s not in mine)
        dup = sorted(s for s, n in mine.items() if n > 1)
        unknown = {f["fail"] for f in p.fails if f["code"] == 9105}
        definite = {f["fail"] for f in p.fails if f["code"] != 9105}
        present_failed = sorted(s for s in mine if abs(s) in definite)
        stray = sorted(s for s in mine if s not in acked and abs(s) not in unknown and abs(s) not in definite)
        rows_problems = []
        if lost:
            rows_problems.append(f"acknowledged rows lost: {lost[:10]} ({len(lost)})")
        if dup:
            rows_problems.append(f"rows applied twice: {dup[:10]}")
        if present_failed:
            rows_problems.append(f"rows of failed writes present: {present_failed[:10]}")
        if stray:
            rows_problems.append(f"rows never acknowledged present: {stray[:10]}")
        errs = r.pop("write_errors", [])
        fails_rep = [x for x in rep if not x.startswith("note")]
        fails_crash = [x for x in crash if not x.startswith("note")]
        acks_rep = sum(1 for a in p.acks if marks["reparent_done"] / 1000 <= a[0] < marks["crash"] / 1000)
        acks_crash = sum(1 for a in p.acks if a[0] >= marks["failover_done"] / 1000)
        r["reparent"] = {
            "ok": not fails_rep and not rows_problems and not errs and events["reparent"]["outcome"] == "ok" and acks_rep >= ROWS_AFTER,
            "problems": fails_rep + rows_problems + errs + [f"stalled: {s}" for s in stalled if "crash" not in s],
            "notes": [x for x in rep if x.startswith("note")] + [f"{len(p.acks)} writes acknowledged, {acks_rep} after the reparent"],
        }
        n_crash = sum(1 for f in p.fails if f["t"] >= marks["crash"])
        probe_problems = []
        for what, probe in (("at the crash", p.probe), ("at the quiet crash", p.quiet_probe)):
            if probe is None and what == "at the quiet crash" and not isinstance(events.get("quiet_crash"), dict):
                crash.append(f"note: no quiet crash ({events.get('quiet_crash')})")
            elif "skip" in (probe or {}):
                crash.append(f"note: idle session: {probe['skip']}")
            elif probe is None or probe.get("error") is not None or probe.get("value") != "1":
                who = "a new connection" if (probe or {}).get("login") else "a session idle"
                probe_problems.append(f"{who} {what}, SELECT 1 right after it: {short(probe)}")
            else:
                who = "a new connection" if probe.get("login") else "a session idle"
                crash.append(f"note: {who} {what}: SELECT 1 ok after {probe['ms']} ms")
        fails_crash += probe_problems
        r["crash"] = {
            "ok": not fails_crash and not rows_problems and acks_crash >= ROWS_AFTER and n_crash <= 3,
            "problems": fails_crash + rows_problems + [f"stalled: {s}" for s in stalled if "crash" in s]
            + ([f"{n_crash} errors at the crash (at most 3: one write in flight)"] if n_crash > 3 else []),
            "notes": [x for x in crash if x.startswith("note")] + [f"{acks_crash} writes after the failover"],
        }


def table(res, ds, wall):
    lines = [
        "| language | driver | version | 1 queries | 2 reparent | 3 cancel | 4 GTIDs | 5 crash | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, lang, label, *_ in ds:
        r = res[name]
        cell = lambda c: "not run" if "skip" in r or "build" in r else "n/a" if c not in r else "pass" if r[c]["ok"] else "**FAIL**"
        notes = [r.get("skip") or r.get("build", "")[:80]] + [n for n in r.get("queries", {}).get("notes", []) if n.startswith("known")]
        notes += r.get("cancel", {}).get("notes", [])
        if "tools" in r:
            notes.append("mariadb-dump, mariadb-admin: " + ("pass" if r["tools"]["ok"] else "**FAIL**"))
        lines.append(f"| {lang} | {label} | {r.get('version', '?')} | " + " | ".join(cell(c) for c in CHECKS) + f" | {'; '.join(n for n in notes if n)} |")
    return "\n".join(lines) + f"\n\nGenerated by `tests/clients/run.py` on {time.strftime('%Y-%m-%d')} ({wall:.0f} s).\n"


def write_readme(text):
    path = os.path.join(ROOT, "README.md")
    s = open(path, encoding="utf-8").read()
    begin, end = "<!-- clients:begin -->", "<!-- clients:end -->"
    if begin not in s:
        sys.exit("README.md has no <!-- clients:begin --> marker")
    head, rest = s.split(begin, 1)
    tail = rest.split(end, 1)[1]
    open(path, "w", encoding="utf-8").write(f"{head}{begin}\n{text}{end}{tail}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baton", required=True, help="baton's MySQL address host:port")
    ap.add_argument("--admin", required=True, help="baton's admin address host:port")
    ap.add_argument("--token", default=os.environ.get("BATON_ADMIN_TOKEN"))
    ap.add_argument("--cluster-info", required=True, help="the cluster's JSON (baton-stack cluster --info)")
    ap.add_argument("--rust-bin", help="the mysql_async driver program (cargo example client_rust)")
    ap.add_argument("--drivers", help="comma-separated subset")
    ap.add_argument("--no-chaos", action="store_true", help="skip the reparent and the crash")
    ap.add_argument("--summary", help="write the results (JSON) here")
    ap.add_argument("--write-readme", action="store_true", help="put the matrix into README.md")
    args = ap.parse_args()
    started = time.time()
    info = json.load(open(args.cluster_info))
    admin = Admin(args.admin, args.token)
    baton_port = int(args.baton.rsplit(":", 1)[1])
    primary = admin.status()["primary"]
    direct_port = int(primary.rsplit(":", 1)[1])
    work = tempfile.mkdtemp(prefix="baton-clients.")
    os.chmod(work, 0o755)
    log(f"baton {args.baton}, primary {primary}, work dir {work}")
    sql(baton_port, [
        "DROP TABLE IF EXISTS cl_rows",
        "CREATE TABLE cl_rows (id BIGINT AUTO_INCREMENT PRIMARY KEY, driver VARCHAR(32) NOT NULL, seq BIGINT NOT NULL, kind VARCHAR(8), KEY (driver, seq))",
    ])
    ds = drivers(args, work)
    res = {d[0]: {} for d in ds}
    for name, err in build_all(ds).items():
        if err:
            res[name]["build"] = err
    if "mysqlasync" in res and not os.path.exists(args.rust_bin or ""):
        res["mysqlasync"]["skip"] = "no --rust-bin (the cargo example client_rust)"
    env = dict(os.environ, CL_HOST="127.0.0.1", CL_BATON_PORT=str(baton_port), CL_DIRECT_PORT=str(direct_port), CL_USER="app",
               CL_PASSWORD="app", CL_DB="baton_test", CL_CASES=os.path.join(HERE, "cases.tsv"), CL_ADMIN=args.admin,
               GO111MODULE="off", GOPATH="/usr/share/gocode", NODE_PATH=os.path.join(HERE, "node", "node_modules"))
    procs, probers = {}, {}
    for name, lang, label, cmd, _ in ds:
        if "build" in res[name] or "skip" in res[name]:
            continue
        procs[name] = Proc(name, cmd, dict(env, CL_NAME=name, CL_WORK=work), work)
        if not args.no_chaos:  # a second instance: its idle session is probed right after the crash
            probers[name] = Proc(f"{name}-probe", cmd, dict(env, CL_NAME=name, CL_WORK=work), work)
    # The greeting line ({"driver", "version"}) arrives before any {"done"}.
    for name, p in list(procs.items()) + [(f"{n}-probe", p) for n, p in probers.items()]:
        try:
            o = p.q.get(timeout=60)
        except queue.Empty:
            o = {}
        if "version" not in o:
            res[name.removesuffix("-probe")]["build"] = f"did not start: {short(o)} {' | '.join(p.noise[-3:])}"
            p.p.kill()
        else:
            res[name.removesuffix("-probe")]["version"] = o["version"]
    for name in [n for n in procs if "build" in res[n]]:
        procs.pop(name).p.kill()
        if name in probers:
            probers.pop(name).p.kill()
    log("drivers up: " + ", ".join(f"{n} {res[n]['version']}" for n in procs))

    # 1: every case directly, then through baton; drivers in parallel.
    def check(p):
        p.send("check direct")
        direct = p.answer(120)
        p.send("check baton")
        via = p.answer(120)
        diffs, notes, cases = compare(p.name, direct, via)
        res[p.name]["queries"] = {"ok": not diffs, "problems": diffs, "notes": notes + [f"{len(cases)} cases: {' '.join(cases)}"]}
    par(check, procs.values())
    log("queries: " + summary_line(res, "queries"))

    # 3: cancel, in parallel.
    def cancel(p):
        p.send("cancel")
        problems, notes = judge_cancel(p.answer(60))
        res[p.name]["cancel"] = {"ok": not problems, "problems": problems, "notes": notes}
    par(cancel, procs.values())
    log("cancel: " + summary_line(res, "cancel"))

    # 4: one driver at a time, so the position can only move by its write.
    for p in procs.values():
        problems = gtid_phase(p, admin)
        res[p.name]["gtids"] = {"ok": not problems, "problems": problems, "notes": []}
    log("gtids: " + summary_line(res, "gtids"))

    if "cli" in procs:
        cli_tools(procs["cli"], res["cli"])

    events = {}
    if not args.no_chaos and procs:
        marks, events = chaos(procs, probers, admin, info, work, res)
        port = int(admin.status()["primary"].rsplit(":", 1)[1])
        rows = sql(port, ["SELECT driver, seq, COUNT(*) FROM baton_test.cl_rows GROUP BY driver, seq"], "admin", "admin")
        wait_until("the killed server's restart", lambda: "restarted" in events, 70)
        quiet_crash(procs, probers, admin, info, work, events)
        judge_writes(procs, marks, events, rows, res)
        log("reparent: " + summary_line(res, "reparent") + "; crash: " + summary_line(res, "crash"))
        # 4 again, on the connections (and pools) that went through the reparent and the crash.
        for p in procs.values():
            problems = [f"after the crash: {x}" for x in gtid_phase(p, admin)]
            g = res[p.name]["gtids"]
            g["ok"], g["problems"] = g["ok"] and not problems, g["problems"] + problems
            g["notes"].append("checked before the reparent and after the crash")
        log("gtids after the crash: " + summary_line(res, "gtids"))
        # Leave the cluster whole (the killed servers rejoined) for whatever runs next.
        wait_until("the cluster to heal", lambda: healthy(admin), 60)
    for p in list(procs.values()) + list(probers.values()):
        p.send("quit")
    for p in list(procs.values()) + list(probers.values()):
        try:
            p.p.wait(10)
        except subprocess.TimeoutExpired:
            p.p.kill()
    wall = time.time() - started
    failed = report(res, ds, wall, events)
    text = table(res, ds, wall)
    print(text)
    if args.summary:
        json.dump({"drivers": res, "events": events, "wall_s": round(wall, 1)}, open(args.summary, "w"), indent=1, ensure_ascii=False)
    if args.write_readme:
        write_readme(text)
    if not failed:
        shutil.rmtree(work, ignore_errors=True)
    else:
        log(f"driver logs kept in {work}")
    print(f"clients: {sum(len([c for c in CHECKS if c in res[d[0]]]) for d in ds) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def cli_tools(p, r):
    """mariadb-dump and mariadb-admin through baton (the cli program does the work)."""
    p.send("tools")
    ans = p.answer(120)
    problems = [o.get("problem") or o.get("error") for o in ans if "problem" in o or "error" in o]
    r["tools"] = {"ok": not problems, "problems": problems, "notes": [o["note"] for o in ans if "note" in o]}
    log("tools: " + ("pass" if not problems else "FAIL"))


def par(fn, items):
    ts = [threading.Thread(target=fn, args=(i,)) for i in items]
    [t.start() for t in ts]
    [t.join() for t in ts]


def summary_line(res, check):
    return " ".join(f"{n}={'ok' if r[check]['ok'] else 'FAIL'}" for n, r in res.items() if isinstance(r, dict) and check in r)


def report(res, ds, wall, events):
    failed = 0
    for name, *_ in ds:
        r = res[name]
        if "skip" in r:
            print(f"{name}: skipped: {r['skip']}")
            continue
        if "build" in r:
            print(f"{name}: NOT RUN: {r['build']}")
            failed += 1
            continue
        for c in CHECKS + ["tools"]:
            if c not in r:
                continue
            mark = "pass" if r[c]["ok"] else "FAIL"
            failed += not r[c]["ok"]
            print(f"{name} {c}: {mark}" + "".join(f"\n    {x}" for x in r[c]["problems"] + r[c]["notes"]))
    print(f"events: {json.dumps(events)}")
    print(f"wall time {wall:.1f} s")
    return failed


if __name__ == "__main__":
    main()
