#!/usr/bin/env python3
"""End-to-end benchmark: the same sysbench workloads, in one run, against
MariaDB directly, through HAProxy (TCP mode) and through baton (release build).
Prints a markdown table with qps, p95/p99 latency and the ratios baton/direct
and baton/haproxy, then baton's RSS with 1,000 idle client connections.

Usage (from the repo root): python3 benches/e2e.py [--time 10]
It installs nothing itself: run scripts/setup.sh first (benches/run.sh does both).
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, deadline=30):
    end = time.time() + deadline
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} did not open")


SSL_DIR = None  # sysbench --mysql-ssl=on reads cacert.pem, client-cert.pem, client-key.pem from its cwd


def sysbench(port, workload, threads, seconds, extra=(), ssl=False):
    if ssl:
        extra = (*extra, "--mysql-ssl=on")
    cmd = ["timeout", str(seconds + 60), "sysbench", workload, "--db-driver=mysql",
           "--mysql-host=127.0.0.1", f"--mysql-port={port}", "--mysql-user=app",
           "--mysql-password=app", "--mysql-db=sbtest", "--tables=4", "--table-size=10000",
           f"--threads={threads}", f"--time={seconds}", "--histogram=on", "--report-interval=0",
           *extra, "run"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=SSL_DIR if ssl else None)
    if out.returncode != 0:
        raise SystemExit(f"sysbench failed on port {port}:\n{out.stdout}\n{out.stderr}")
    text = out.stdout
    qps = float(re.search(r"queries:\s+\d+\s+\(([\d.]+) per sec", text).group(1))
    errors = int(re.search(r"ignored errors:\s+(\d+)", text).group(1))
    hist = []
    for line in text.splitlines():
        m = re.match(r"\s*([\d.]+)\s+\|\*+\s+(\d+)$", line)
        if m:
            hist.append((float(m.group(1)), int(m.group(2))))
    total = sum(c for _, c in hist)

    def pct(p):
        acc = 0
        for v, c in hist:
            acc += c
            if acc >= total * p:
                return v
        return float("nan")

    avg = float(re.search(r"avg:\s+([\d.]+)", text).group(1))
    return {"qps": qps, "p95": pct(0.95), "p99": pct(0.99), "avg": avg, "errors": errors}


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--time", type=int, default=10, help="seconds per sysbench run")
    ap.add_argument("--cases", default="oltp_point_select:1,oltp_point_select:4,oltp_point_select:16,oltp_read_write:4,oltp_read_write:16",
                    help="comma-separated workload:threads")
    ap.add_argument("--no-rss", action="store_true", help="skip the 1,000 idle connections RSS measurement")
    ap.add_argument("--repeat", type=int, default=1, help="runs per target and case, interleaved; the median qps run is reported")
    ap.add_argument("--baton-threads", type=int, default=0, help="baton server.worker_threads (0: one per core)")
    ap.add_argument("--tls", action="store_true",
                    help="compare TLS instead: direct TLS, baton plaintext, baton with TLS from clients, "
                         "baton with TLS on both legs; and the login cost with and without TLS")
    ap.add_argument("--replay", action="store_true",
                    help="compare transaction replay: baton with [transaction_replay] off and on, same run")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="baton-bench-")
    os.chmod(work, 0o755)  # mariadbd runs as user mysql and must reach its data dir
    procs = []

    def cleanup(*_):
        for p in reversed(procs):
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=30)
            except Exception:
                p.kill()

    try:
        info_path = os.path.join(work, "cluster.json")
        procs.append(subprocess.Popen([f"{ROOT}/target/release/baton-stack", "cluster", "--info", info_path,
                                       "--dir", os.path.join(work, "cluster")], stderr=subprocess.DEVNULL))
        end = time.time() + 120
        while not os.path.exists(info_path):
            if time.time() > end or procs[0].poll() is not None:
                raise SystemExit("cluster did not start")
            time.sleep(0.1)
        info = json.load(open(info_path))
        primary = info["primary"]
        direct = int(primary.split(":")[1])

        hp = free_port()
        with open(os.path.join(work, "haproxy.cfg"), "w") as f:
            f.write(f"""global
  maxconn 8192
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen mysql
  bind 127.0.0.1:{hp}
  server primary {primary}
""")
        procs.append(subprocess.Popen(["haproxy", "-f", os.path.join(work, "haproxy.cfg")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        bp, ap_ = free_port(), free_port()
        servers = ", ".join(f'"{s}"' for s in info["servers"])
        with open(os.path.join(work, "baton.toml"), "w") as f:
            f.write(f"""[server]
listen = "127.0.0.1:{bp}"
admin_listen = "127.0.0.1:{ap_}"
worker_threads = {args.baton_threads}
[topology]
path = "{work}/topology.json"
[[users]]
name = "app"
password_hash = "*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3"
[[clusters]]
name = "main"
servers = [{servers}]
primary = "{primary}"
""")
        if args.tls:
            cert, key = os.path.join(work, "baton.pem"), os.path.join(work, "baton-key.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                            "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                            "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
            global SSL_DIR
            SSL_DIR = os.path.join(work, "sysbench-ssl")
            os.makedirs(SSL_DIR)
            # The servers verify a client certificate they are shown: the harness CA's.
            tls_dir = os.path.dirname(info["tls_ca"])
            for src, dst in [("client.pem", "client-cert.pem"), ("client-key.pem", "client-key.pem")]:
                with open(os.path.join(SSL_DIR, dst), "w") as f:
                    f.write(open(os.path.join(tls_dir, src)).read())
            with open(os.path.join(SSL_DIR, "cacert.pem"), "w") as f:
                f.write(open(info["tls_ca"]).read() + open(cert).read())
            text = open(os.path.join(work, "baton.toml")).read().replace(
                "[topology]", f'[server.tls]\ncert = "{cert}"\nkey = "{key}"\n[topology]')
            open(os.path.join(work, "baton.toml"), "w").write(text)
            bp2, ap2 = free_port(), free_port()
            both = text.replace(f"127.0.0.1:{bp}", f"127.0.0.1:{bp2}").replace(f"127.0.0.1:{ap_}", f"127.0.0.1:{ap2}") \
                + f'tls = "verify_ca"\ntls_ca = "{info["tls_ca"]}"\n'
            both = both.replace(f"{work}/topology.json", f"{work}/topology2.json")
            open(os.path.join(work, "baton-both.toml"), "w").write(both)
        baton = subprocess.Popen([f"{ROOT}/target/release/baton", "--config", os.path.join(work, "baton.toml")],
                                 stderr=subprocess.DEVNULL, env={**os.environ, "BATON_LOG": "warn"})
        procs.append(baton)
        wait_port(hp)
        wait_port(bp)
        if args.replay:
            bp3, ap3 = free_port(), free_port()
            text = open(os.path.join(work, "baton.toml")).read()
            on = text.replace(f"127.0.0.1:{bp}", f"127.0.0.1:{bp3}").replace(f"127.0.0.1:{ap_}", f"127.0.0.1:{ap3}") \
                .replace(f"{work}/topology.json", f"{work}/topology3.json").replace("[[users]]", "[transaction_replay]\nenabled = true\n[[users]]")
            open(os.path.join(work, "baton-replay.toml"), "w").write(on)
            baton3 = subprocess.Popen([f"{ROOT}/target/release/baton", "--config", os.path.join(work, "baton-replay.toml")],
                                      stderr=subprocess.DEVNULL, env={**os.environ, "BATON_LOG": "warn"})
            procs.append(baton3)
            wait_port(bp3)
        if args.tls:
            baton2 = subprocess.Popen([f"{ROOT}/target/release/baton", "--config", os.path.join(work, "baton-both.toml")],
                                      stderr=subprocess.DEVNULL, env={**os.environ, "BATON_LOG": "warn"})
            procs.append(baton2)
            wait_port(bp2)

        subprocess.run(["sysbench", "oltp_read_write", "--db-driver=mysql", "--mysql-host=127.0.0.1",
                        f"--mysql-port={direct}", "--mysql-user=app", "--mysql-password=app",
                        "--mysql-db=sbtest", "--tables=4", "--table-size=10000", "prepare"],
                       check=True, capture_output=True)
        if args.tls:
            return tls_runs(args, direct, bp, bp2, baton.pid, baton2.pid)
        if args.replay:
            return replay_runs(args, bp, bp3, baton.pid, baton3.pid)
        targets = [("direct", direct), ("haproxy", hp), ("baton", bp)]
        pids = {"haproxy": procs[1].pid, "baton": baton.pid}
        rows = []
        cases = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cases.split(",")]
        for workload, threads in cases:
            runs = {name: [] for name, _ in targets}
            for _ in range(args.repeat):
                for name, port in targets:
                    before = cpu_seconds(pids[name]) if name in pids else 0.0
                    res = sysbench(port, workload, threads, args.time)
                    if name in pids:
                        # The proxy's own CPU per query (user + system), over the same run.
                        res["cpu_us"] = (cpu_seconds(pids[name]) - before) * 1e6 / max(1.0, res["qps"] * args.time)
                    runs[name].append(res)
                    print(f"  {workload} t={threads} {name}: {res}", file=sys.stderr)
            r = {name: sorted(rs, key=lambda x: x["qps"])[len(rs) // 2] for name, rs in runs.items()}
            rows.append((workload, threads, r))

        print(f"\nsysbench, {args.time} s per run, 4 tables x 10,000 rows, median of {args.repeat} interleaved run(s) per target, same machine (2 cores)\n")
        print("| workload | threads | direct qps | haproxy qps | baton qps | baton/direct | baton/haproxy "
              "| p95 ms d/h/b | p99 ms d/h/b | avg ms d/h/b | proxy CPU us/query h/b | errors b |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for workload, threads, r in rows:
            d, h, b = r["direct"], r["haproxy"], r["baton"]
            print(f"| {workload} | {threads} | {d['qps']:.0f} | {h['qps']:.0f} | {b['qps']:.0f} "
                  f"| {b['qps'] / d['qps']:.2f} | {b['qps'] / h['qps']:.2f} "
                  f"| {d['p95']:.2f}/{h['p95']:.2f}/{b['p95']:.2f} | {d['p99']:.2f}/{h['p99']:.2f}/{b['p99']:.2f} "
                  f"| {d['avg']:.3f}/{h['avg']:.3f}/{b['avg']:.3f} | {h['cpu_us']:.1f}/{b['cpu_us']:.1f} | {b['errors']} |")

        if args.no_rss:
            return
        # RSS with 1,000 idle client connections (each with its backend session).
        import pymysql
        before = rss_kib(baton.pid)
        conns = [pymysql.connect(host="127.0.0.1", port=bp, user="app", password="app") for _ in range(1000)]
        time.sleep(0.5)
        after = rss_kib(baton.pid)
        for c in conns:
            c.close()
        print(f"\nbaton RSS: {before / 1024:.1f} MiB idle after the runs, {after / 1024:.1f} MiB with 1,000 idle client "
              f"connections ({(after - before) / 1000:.1f} KiB per connection incl. its backend session)")
    finally:
        cleanup()
        # The cluster's data dirs are 0.5-1 GB: nothing in them is reported.
        shutil.rmtree(work, ignore_errors=True)


def login_ms(port, ssl, n=200):
    """Mean time (ms) to connect, log in and disconnect, over n sequential logins."""
    import pymysql
    kw = {"ssl": {"check_hostname": False, "verify_mode": 0}} if ssl else {}
    start = time.perf_counter()
    for _ in range(n):
        pymysql.connect(host="127.0.0.1", port=port, user="app", password="app", **kw).close()
    return (time.perf_counter() - start) * 1000 / n


def replay_runs(args, bp, bp3, pid, pid3):
    """Transaction replay's recording cost: the same workloads through baton with
    replay off and on (two instances in front of the same primary), interleaved."""
    targets = [("off", bp, pid), ("on", bp3, pid3)]
    rows = []
    for case in args.cases.split(","):
        workload, threads = case.split(":")[0], int(case.split(":")[1])
        runs = {t[0]: [] for t in targets}
        for _ in range(args.repeat):
            for name, port, p in targets:
                before = cpu_seconds(p)
                res = sysbench(port, workload, threads, args.time)
                res["cpu_us"] = (cpu_seconds(p) - before) * 1e6 / max(1.0, res["qps"] * args.time)
                runs[name].append(res)
                print(f"  {workload} t={threads} replay {name}: {res}", file=sys.stderr)
        rows.append((workload, threads, {n: sorted(rs, key=lambda x: x["qps"])[len(rs) // 2] for n, rs in runs.items()}))
    print(f"\nsysbench through baton, transaction replay off vs on, {args.time} s per run, median of {args.repeat} "
          "interleaved run(s), same machine (2 cores)\n")
    print("| workload | threads | replay off qps | replay on qps | on/off | p95 ms off/on | baton CPU us/query off/on | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for workload, threads, r in rows:
        a, b = r["off"], r["on"]
        print(f"| {workload} | {threads} | {a['qps']:.0f} | {b['qps']:.0f} | {b['qps'] / a['qps']:.2f} "
              f"| {a['p95']:.2f}/{b['p95']:.2f} | {a['cpu_us']:.1f}/{b['cpu_us']:.1f} | {a['errors'] + b['errors']} |")


def tls_runs(args, direct, bp, bp2, pid, pid2):
    """TLS comparison: the same workloads direct with TLS, through baton in clear,
    through baton with TLS from the client, and with TLS on both legs."""
    targets = [("direct-tls", direct, True, None), ("baton", bp, False, pid),
               ("baton-tls", bp, True, pid), ("baton-tls-both", bp2, True, pid2)]
    rows = []
    for case in args.cases.split(","):
        workload, threads = case.split(":")[0], int(case.split(":")[1])
        runs = {t[0]: [] for t in targets}
        for _ in range(args.repeat):
            for name, port, ssl, p in targets:
                before = cpu_seconds(p) if p else 0.0
                res = sysbench(port, workload, threads, args.time, ssl=ssl)
                res["cpu_us"] = (cpu_seconds(p) - before) * 1e6 / max(1.0, res["qps"] * args.time) if p else float("nan")
                runs[name].append(res)
                print(f"  {workload} t={threads} {name}: {res}", file=sys.stderr)
        rows.append((workload, threads, {n: sorted(rs, key=lambda x: x["qps"])[len(rs) // 2] for n, rs in runs.items()}))
    print(f"\nsysbench with TLS, {args.time} s per run, median of {args.repeat} interleaved run(s), same machine (2 cores)\n")
    print("| workload | threads | direct TLS qps | baton qps | baton TLS qps | baton TLS both legs qps "
          "| baton TLS / direct TLS | baton TLS / baton | both legs / direct TLS | baton CPU us/query plain/TLS/both | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for workload, threads, r in rows:
        d, b, t, t2 = r["direct-tls"], r["baton"], r["baton-tls"], r["baton-tls-both"]
        print(f"| {workload} | {threads} | {d['qps']:.0f} | {b['qps']:.0f} | {t['qps']:.0f} | {t2['qps']:.0f} "
              f"| {t['qps'] / d['qps']:.2f} | {t['qps'] / b['qps']:.2f} | {t2['qps'] / d['qps']:.2f} "
              f"| {b['cpu_us']:.1f}/{t['cpu_us']:.1f}/{t2['cpu_us']:.1f} | {b['errors'] + t['errors'] + t2['errors']} |")
    cost = {name: login_ms(port, ssl) for name, port, ssl in
            [("direct", direct, False), ("direct-tls", direct, True), ("baton", bp, False), ("baton-tls", bp, True),
             ("baton-tls-both", bp2, True)]}
    print("\nlogin (connect, log in, disconnect; PyMySQL, mean of 200 in a row), ms: "
          + ", ".join(f"{k} {v:.2f}" for k, v in cost.items())
          + f"; TLS handshake cost through baton: {cost['baton-tls'] - cost['baton']:.2f} ms per connection")


if __name__ == "__main__":
    main()
