#!/usr/bin/env python3
"""midge's time-series path vs InfluxDB 1.6 on this machine (driven by bench/tsdb/run).

Per side, on a fresh server in a temporary folder, loopback only, free ports:
  1. ingest POINTS datapoints of one series (metric m, tag host=d0, one every 100 ms):
     midge: QoS 1 MQTT publishes of JSON {"ts":..,"value":..} through a `tsdb = true` rule,
     timed from the first publish to the last point readable through the API (committed,
     [series] synchronous = full); InfluxDB: line protocol over HTTP in batches of 5,000
     (/write?precision=ms, wal-fsync-delay 0: each batch fsynced before its 204).
     Both sides then count the points.
  2. disk bytes per datapoint for those points: midge's series files after a WAL
     checkpoint; InfluxDB's data + wal folders of the database after the cache snapshot
     and compactions went quiet.
  3. the query data sets, written over HTTP in batches of 5,000 (also timed):
     (b) mb: B_SERIES series (host h000.., region r0..r3) x B_PER points, one a second;
     (c) mc: C_SERIES series (host c0000..) x C_PER points.
  4. query latency, with both servers up and loaded (InfluxDB's cache written to TSM and
     its compactions quiet): each query WARMUP times on each side, then RUNS timed runs
     alternating between the sides, the median per side; a run is the full HTTP round trip
     with the answer read. (a) Avg per 1 minute over the POINTS of m; (b) region in
     (r0, r1), group by host, Avg per 10 minutes over mb; (c) last value of each host of mc.
Steps 1-3 run one side after the other (the order alternating between rounds).

Prints JSON lines (one per figure) to stdout; run formats the table.
"""

import http.client
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mqttpub  # noqa: E402

E = os.environ
POINTS = int(E.get("POINTS", "1000000"))
B_SERIES = int(E.get("B_SERIES", "100"))
B_PER = int(E.get("B_PER", "10000"))
C_SERIES = int(E.get("C_SERIES", "1000"))
C_PER = int(E.get("C_PER", "10"))
RUNS = int(E.get("RUNS", "10"))
ROUNDS = int(E.get("ROUNDS", "3"))
WARMUP = int(E.get("WARMUP", "2"))
BATCH = int(E.get("BATCH", "5000"))
SIDES = E.get("SIDES", "midge,influx").split(",")
MIDGE = E.get("MIDGE", "target/release/midge")
INFLUXD = E.get("INFLUXD", "/usr/bin/influxd")
KEEP = E.get("KEEP", "") == "1"
# midge's durability (defaults: the broker's group commit, the series store fsynced at every
# commit); only for experiments: the figures are for the defaults
PERSIST_SYNC = E.get("PERSIST_SYNC", "batch")
SERIES_SYNC = E.get("SERIES_SYNC", "full")
STEP_A = 100  # ms between the points of the ingested series
STEP_B = 1000

NOW = int(time.time() * 1000)
# Aligned on 10 minutes so that both sides' sampling windows start at the same instants
# (InfluxDB aligns GROUP BY time() on the epoch, midge on the query's start).
T0 = (NOW - POINTS * STEP_A - 86_400_000) // 600_000 * 600_000
A_END = T0 + POINTS * STEP_A  # exclusive
B_END = T0 + B_PER * STEP_B
C_END = T0 + C_PER * STEP_B

PROCS = []


def log(msg):
    print(f"== {msg}", file=sys.stderr, flush=True)


ROUND = [0]


def emit(**kw):
    if ROUND[0]:
        kw["round"] = ROUND[0]
    print(json.dumps(kw), flush=True)


def free_port():
    # Below the ephemeral range, so no client socket of ours can hold it later.
    try:
        low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except OSError:
        low = 32768
    for _ in range(200):
        p = random.randint(10000, low - 1)
        if p in (1883, 8086, 8088, 18083):
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
            return p
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port")


def start(argv, logpath, cwd):
    f = open(logpath, "wb")
    p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
    PROCS.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            log(f"pid {p.pid} ignored SIGTERM for 15 s: SIGKILL")
            p.kill()
            p.wait()
    if p in PROCS:
        PROCS.remove(p)


def stop_all(*_):
    for p in list(PROCS):
        try:
            stop(p)
        except Exception:  # noqa: BLE001
            pass


signal.signal(signal.SIGTERM, lambda *_: (stop_all(), sys.exit(143)))


def cpu_secs(pid):
    """utime + stime of a process, in seconds."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def dir_bytes(path):
    """Bytes allocated on disk (as du counts them: InfluxDB preallocates sparse 4 MiB
    series-file segments whose apparent size is not what they occupy)."""
    if os.path.isfile(path):
        return os.lstat(path).st_blocks * 512
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return total


class Http:
    """One keep-alive connection; request() returns (status, body bytes, seconds)."""

    def __init__(self, port):
        self.port = port
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def request(self, method, path, body=None, headers=None):
        h = {"Host": "127.0.0.1"}
        h.update(headers or {})
        for attempt in (0, 1):
            try:
                t = time.perf_counter()
                self.c.request(method, path, body=body, headers=h)
                r = self.c.getresponse()
                data = r.read()
                return r.status, data, time.perf_counter() - t
            except (http.client.HTTPException, ConnectionError):
                self.c.close()
                self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
                if attempt:
                    raise
        raise AssertionError


# --- data ---------------------------------------------------------------------------------


def series_a():
    rnd = random.Random(1)
    v = 20.0
    for i in range(POINTS):
        v += rnd.uniform(-0.05, 0.05)
        yield T0 + i * STEP_A, round(v, 2)


def series_b():
    rnd = random.Random(2)
    for s in range(B_SERIES):
        v = 20.0 + s % 10
        host, region = f"h{s:03d}", f"r{s % 4}"
        for i in range(B_PER):
            v += rnd.uniform(-0.05, 0.05)
            yield {"host": host, "region": region}, T0 + i * STEP_B, round(v, 2)


def series_c():
    rnd = random.Random(3)
    for s in range(C_SERIES):
        for i in range(C_PER):
            yield {"host": f"c{s:04d}"}, T0 + i * STEP_B, round(rnd.uniform(0, 100), 2)


def batches(it, n=BATCH):
    cur = []
    for x in it:
        cur.append(x)
        if len(cur) == n:
            yield cur
            cur = []
    if cur:
        yield cur


def fmt(v):
    return f"{v:.2f}"


# --- InfluxDB -----------------------------------------------------------------------------


def influx_side(work):
    d = os.path.join(work, "influx")
    os.makedirs(d)
    http_port, rpc_port = free_port(), free_port()
    conf = os.path.join(d, "influxdb.conf")
    with open(conf, "w") as f:
        f.write(f"""reporting-enabled = false
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{d}/meta"
  logging-enabled = false
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  index-version = "inmem"
  wal-fsync-delay = "0s"
  query-log-enabled = false
  # defaults 10m and 4h: shortened so that the disk figure is taken after the cache was
  # written to TSM files and compacted (they only act once writes have stopped)
  cache-snapshot-write-cold-duration = "5s"
  compact-full-write-cold-duration = "15s"
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false
  max-body-size = 0
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
[retention]
  enabled = false
""")
    p = start([INFLUXD, "-config", conf], os.path.join(d, "influxd.log"), d)
    h = Http(http_port)
    for _ in range(300):
        try:
            st, _, _ = h.request("GET", "/ping")
            if st == 204:
                break
        except OSError:
            pass
        if p.poll() is not None:
            raise RuntimeError("influxd exited:\n" + open(os.path.join(d, "influxd.log")).read()[-3000:])
        time.sleep(0.1)
    else:
        raise RuntimeError("influxd did not answer /ping")
    ver = ""
    try:
        h.c.request("GET", "/ping")
        r = h.c.getresponse()
        r.read()
        ver = r.getheader("X-Influxdb-Version", "")
    except Exception:  # noqa: BLE001
        h = Http(http_port)
    log(f"influxd {ver} pid {p.pid} on 127.0.0.1:{http_port} (rpc {rpc_port})")

    def q(sql, db="bench"):
        path = "/query?" + urllib.parse.urlencode({"db": db, "q": sql, "epoch": "ms"})
        st, body, t = h.request("POST" if sql.startswith("CREATE") else "GET", path)
        if st != 200:
            raise RuntimeError(f"influx {sql}: {st} {body[:300]!r}")
        return t, json.loads(body)

    q("CREATE DATABASE bench", db="")

    def write(lines_batches):
        bodies = [("\n".join(b)).encode() for b in lines_batches]
        n = sum(len(b) for b in lines_batches)
        t = time.perf_counter()
        for body in bodies:
            st, resp, _ = h.request("POST", "/write?db=bench&precision=ms", body=body)
            if st != 204:
                raise RuntimeError(f"influx write: {st} {resp[:300]!r}")
        return n, time.perf_counter() - t

    def count(measurement):
        _, r = q(f"SELECT count(value) FROM {measurement}")
        try:
            return r["results"][0]["series"][0]["values"][0][1]
        except (KeyError, IndexError):
            return 0

    # 1. ingest
    log(f"influx: ingest {POINTS} points, line protocol, batches of {BATCH}")
    lb = [[f"m,host=d0 value={fmt(v)} {ts}" for ts, v in b] for b in batches(series_a())]
    cpu0 = cpu_secs(p.pid)
    n, secs = write(lb)
    cpu = cpu_secs(p.pid) - cpu0
    del lb
    got = count("m")
    emit(side="influx", figure="ingest", points=n, secs=secs, rate=n / secs, stored=got, cpu=cpu,
         per_cpu=n / cpu if cpu else None)
    log(f"influx: {n} points in {secs:.2f} s = {n / secs:,.0f} points/s; counted {got}")

    # 2. disk
    dbdirs = [os.path.join(d, "data", "bench"), os.path.join(d, "wal", "bench")]

    def wait_quiet():
        """Until the WAL was written into TSM files and nothing changed for 5 s (after the
        full-compaction delay); returns (data bytes, wal bytes, seconds waited)."""
        t = time.time()
        last, stable = None, 0
        while time.time() - t < 120:
            walb = dir_bytes(dbdirs[1])
            cur = (dir_bytes(dbdirs[0]), walb)
            tsm = sum(f.endswith(".tsm") for _, _, fs in os.walk(dbdirs[0]) for f in fs)
            busy = any(f.endswith(".tmp") for _, _, fs in os.walk(dbdirs[0]) for f in fs)
            stable = stable + 1 if cur == last and not busy else 0
            last = cur
            if tsm and walb < 64 * 1024 and stable >= 5 and time.time() - t > 25:
                break
            time.sleep(1)
        return last[0], last[1], time.time() - t

    log("influx: waiting for the cache snapshot and compactions to go quiet")
    t = time.time()
    data_b, wal_b, _ = wait_quiet()
    last = (data_b, wal_b)
    data_b, wal_b = last
    tsm_files = sorted(f for _, _, fs in os.walk(dbdirs[0]) for f in fs if f.endswith(".tsm"))
    emit(side="influx", figure="disk", bytes=data_b + wal_b, data=data_b, wal=wal_b,
         per_point=(data_b + wal_b) / POINTS, files=tsm_files, waited=time.time() - t)
    log(f"influx: data {data_b:,} B + wal {wal_b:,} B = {(data_b + wal_b) / POINTS:.2f} B/point "
        f"(TSM files {tsm_files}, after {time.time() - t:.0f} s)")

    # 3. query data sets
    for name, gen, total in (("mb", series_b, B_SERIES * B_PER), ("mc", series_c, C_SERIES * C_PER)):
        lb = [[f"{name},{','.join(f'{k}={v}' for k, v in tags.items())} value={fmt(val)} {ts}"
               for tags, ts, val in b] for b in batches(gen())]
        n, secs = write(lb)
        got = count(name)
        emit(side="influx", figure=f"write-{name}", points=n, secs=secs, rate=n / secs, stored=got)
        log(f"influx: {name}: {n} points in {secs:.2f} s = {n / secs:,.0f} points/s (HTTP); counted {got}")

    # the query data on disk too, and no compaction left to run beside midge's turn
    log("influx: waiting for the cache snapshot and compactions to go quiet")
    wait_quiet()

    # 4. queries
    qa = f"SELECT mean(value) FROM m WHERE time >= {T0}ms AND time < {A_END}ms GROUP BY time(1m)"
    qb = (f"SELECT mean(value) FROM mb WHERE (region = 'r0' OR region = 'r1') AND time >= {T0}ms "
          f"AND time < {B_END}ms GROUP BY time(10m), host")
    qc = f"SELECT last(value) FROM mc WHERE time >= {T0}ms AND time < {NOW + 60_000}ms GROUP BY host"
    def shape(r):
        series = r["results"][0].get("series", [])
        return {"groups": len(series), "rows": sum(len(x["values"]) for x in series),
                "sample": series[0]["values"][0] if series else None}

    return p, {label: (lambda sql=sql: q(sql), shape, sql) for label, sql in (("a", qa), ("b", qb), ("c", qc))}


# --- midge --------------------------------------------------------------------------------


def midge_side(work):
    d = os.path.join(work, "midge")
    os.makedirs(d)
    mqtt_port, http_port = free_port(), free_port()
    conf = os.path.join(d, "midge.toml")
    with open(conf, "w") as f:
        f.write(f"""[server]
log_level = "warn"
[security]
allow_anonymous = true
[[listener]]
bind = "127.0.0.1"
port = {mqtt_port}
[persistence]
dir = "{d}/data"
sync = "{PERSIST_SYNC}"
[series]
synchronous = "{SERIES_SYNC}"
max_rows_per_query = 100000
[http]
bind = "127.0.0.1"
port = {http_port}

[[rule]]
name = "bench"
sql = "SELECT 'm' AS metric, value, ts AS timestamp, topic(2) AS host FROM 'tsdb/+'"
tsdb = true
""")
    p = start([MIDGE, "serve", "-c", conf], os.path.join(d, "midge.log"), d)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", http_port), timeout=1).close()
            socket.create_connection(("127.0.0.1", mqtt_port), timeout=1).close()
            break
        except OSError:
            pass
        if p.poll() is not None:
            raise RuntimeError("midge exited:\n" + open(os.path.join(d, "midge.log")).read()[-3000:])
        time.sleep(0.1)
    else:
        raise RuntimeError("midge is not listening")
    log(f"midge pid {p.pid}: MQTT 127.0.0.1:{mqtt_port}, HTTP {http_port}")
    h = Http(http_port)
    hq = Http(http_port)  # for polling during ingest

    def query(body, conn=h):
        """PUT /v1/datapoint?query, following nextMarker pages; returns (seconds, results)."""
        t = 0.0
        results = None
        body = json.loads(json.dumps(body))
        for _ in range(10000):
            st, data, secs = conn.request("PUT", "/v1/datapoint?query", body=json.dumps(body).encode(),
                                          headers={"Content-Type": "application/json"})
            t += secs
            if st != 200:
                raise RuntimeError(f"midge query: {st} {data[:500]!r}")
            r = json.loads(data)["results"][0]
            if results is None:
                results = r
            else:
                results.setdefault("groups", []).extend(r.get("groups", []))
            if r.get("truncated") and r.get("nextMarker"):
                body["queries"][0]["marker"] = r["nextMarker"]
                continue
            return t, results
        raise RuntimeError("too many pages")

    def count(metric, start, end):
        _, r = query({"queries": [{"metric": metric, "filters": {"start": start, "end": end},
                                   "aggregators": [{"name": "Count"}]}]})
        try:
            return int(sum(v[1] for g in r["groups"] for v in g["values"]))
        except (KeyError, IndexError, TypeError):
            return 0

    def has_point(metric, ts):
        try:
            _, r = query({"queries": [{"metric": metric, "filters": {"start": ts, "end": ts}}]}, conn=hq)
        except RuntimeError:
            return False
        return any(g.get("values") for g in r.get("groups", []))

    # 0. the publisher's own ceiling: same publisher, a topic no rule takes
    n0 = min(POINTS, 200_000)
    chunks, n = mqttpub.build_publishes(
        (("nobody/d0", b'{"ts":%d,"value":%s}' % (ts, fmt(v).encode())) for ts, v in
         ((T0 + i, 1.0) for i in range(n0))))
    secs, acks = mqttpub.publish(mqtt_port, chunks, n, client_id="tsdb-ceiling")
    emit(side="midge", figure="publisher-ceiling", msgs=n, secs=secs, rate=n / secs)
    log(f"publisher ceiling (topic without rule): {n} QoS 1 in {secs:.2f} s = {n / secs:,.0f} msg/s")

    # 1. ingest through the tsdb rule
    log(f"midge: ingest {POINTS} points, QoS 1 MQTT through the tsdb rule")
    chunks, n = mqttpub.build_publishes(
        (("tsdb/d0", b'{"ts":%d,"value":%s}' % (ts, fmt(v).encode())) for ts, v in series_a()))
    last_ts = A_END - STEP_A
    cpu0 = cpu_secs(p.pid)
    t = time.perf_counter()
    secs_acked, acks = mqttpub.publish(mqtt_port, chunks, n, client_id="tsdb-bench")
    del chunks
    deadline = time.perf_counter() + 600
    while not has_point("m", last_ts) and time.perf_counter() < deadline:
        time.sleep(0.05)
    secs = time.perf_counter() - t
    # (includes the few polling queries, which are cheap: one point by its key)
    cpu = cpu_secs(p.pid) - cpu0
    got = count("m", T0, A_END)
    emit(side="midge", figure="ingest", points=n, secs=secs, rate=n / secs, stored=got,
         acked_secs=secs_acked, cpu=cpu, per_cpu=n / cpu if cpu else None)
    log(f"midge: {n} published, all PUBACKs in {secs_acked:.2f} s, last point readable after "
        f"{secs:.2f} s = {n / secs:,.0f} points/s; counted {got}")

    # 2. disk
    data = os.path.join(d, "data")
    files = {}
    for f in sorted(os.listdir(data)):
        if f.startswith("series") and f.endswith(".db"):
            path = os.path.join(data, f)
            if f.endswith(".db") and os.path.isfile(path):
                try:
                    c = sqlite3.connect(path, timeout=30)
                    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    c.close()
                except sqlite3.Error as e:
                    log(f"checkpoint of {f}: {e}")
    for f in sorted(os.listdir(data)):
        path = os.path.join(data, f)
        files[f] = dir_bytes(path)
    # the database and its WAL; not the -shm (a memory-mapped index of the WAL) and not
    # midge.store (the broker's sessions and retained messages)
    sbytes = sum(v for k, v in files.items() if k.startswith("series") and not k.endswith("-shm"))
    emit(side="midge", figure="disk", bytes=sbytes, per_point=sbytes / POINTS, files=files)
    log(f"midge: series files {sbytes:,} B = {sbytes / POINTS:.2f} B/point ({files})")

    # 3. query data sets over POST /v1/datapoint
    def write(name, gen):
        bodies = [json.dumps({"datapoints": [{"metric": name, "tags": tags, "timestamp": ts, "value": v}
                                             for tags, ts, v in b]}).encode() for b in batches(gen())]
        n = sum(1 for _ in gen())
        t = time.perf_counter()
        for body in bodies:
            st, resp, _ = h.request("POST", "/v1/datapoint", body=body,
                                    headers={"Content-Type": "application/json"})
            if st not in (200, 204):
                raise RuntimeError(f"midge write: {st} {resp[:300]!r}")
        return n, time.perf_counter() - t

    for name, gen, end in (("mb", series_b, B_END), ("mc", series_c, C_END)):
        n, secs = write(name, gen)
        got = count(name, T0, end)
        emit(side="midge", figure=f"write-{name}", points=n, secs=secs, rate=n / secs, stored=got)
        log(f"midge: {name}: {n} points in {secs:.2f} s = {n / secs:,.0f} points/s (HTTP); counted {got}")

    # 4. queries
    qa = {"queries": [{"metric": "m", "field": "value", "filters": {"start": T0, "end": A_END - 1},
                       "aggregators": [{"name": "Avg", "sampling": "1 minute"}], "limit": 100000}]}
    qb = {"queries": [{"metric": "mb", "field": "value",
                       "filters": {"start": T0, "end": B_END - 1, "tags": {"region": ["r0", "r1"]}},
                       "groupBy": [{"name": "Tag", "tags": ["host"]}],
                       "aggregators": [{"name": "Avg", "sampling": "10 minutes"}], "limit": 100000}]}
    qc = {"queries": [{"metric": "mc", "field": "value", "filters": {"start": T0, "end": NOW + 60_000},
                       "groupBy": [{"name": "Tag", "tags": ["host"]}],
                       "aggregators": [{"name": "Last"}], "limit": 100000}]}
    def shape(r):
        groups = r.get("groups", [])
        return {"groups": len(groups), "rows": sum(len(g.get("values", [])) for g in groups),
                "sample": groups[0]["values"][0] if groups and groups[0].get("values") else None,
                "truncated": r.get("truncated")}

    return p, {label: (lambda body=body: query(body), shape, body) for label, body in (("a", qa), ("b", qb), ("c", qc))}


def run_queries(loaded):
    """loaded: side -> its queries. Both servers are up: each query is run on both sides in
    turn (warm-up runs, then RUNS timed runs alternating the order), so both see the same
    noise from moment to moment."""
    sides = list(loaded)
    for label in "abc":
        times = {side: [] for side in sides}
        for _ in range(WARMUP):
            for side in sides:
                loaded[side][label][0]()
        for k in range(RUNS):
            for side in (sides if k % 2 == 0 else list(reversed(sides))):
                t, _ = loaded[side][label][0]()
                times[side].append(t)
        for side in sides:
            fn, shape, desc = loaded[side][label]
            _, r = fn()
            sh = shape(r)
            ts = times[side]
            med = statistics.median(ts)
            emit(side=side, figure=f"query-{label}", median=med, min=min(ts), max=max(ts), query=desc, **sh)
            log(f"{side}: query {label}: median {med * 1000:.1f} ms ({sh['groups']} groups, {sh['rows']} rows)")


def main():
    work = tempfile.mkdtemp(prefix="midge-tsdb-bench.")
    emit(figure="setup", points=POINTS, b_series=B_SERIES, b_per=B_PER, c_series=C_SERIES, c_per=C_PER,
         runs=RUNS, warmup=WARMUP, batch=BATCH, t0=T0, rounds=ROUNDS, persist_sync=PERSIST_SYNC,
         series_sync=SERIES_SYNC)
    try:
        for r in range(1, ROUNDS + 1):
            ROUND[0] = r
            # alternate the order (A B, B A, A B) so that both sides see the same noise
            order = SIDES if r % 2 else list(reversed(SIDES))
            rd = os.path.join(work, f"round{r}")
            os.makedirs(rd, exist_ok=True)
            loaded = {}
            try:
                # ingest, disk and the query data: one side after the other
                for side in order:
                    log(f"round {r}/{ROUNDS}: {side}")
                    emit(side=side, figure="load-before", loadavg=open("/proc/loadavg").read().split()[:3])
                    try:
                        _, loaded[side] = (influx_side if side == "influx" else midge_side)(rd)
                        emit(side=side, figure="load-after", loadavg=open("/proc/loadavg").read().split()[:3])
                    except Exception as e:  # noqa: BLE001
                        log(f"{side} failed: {e}")
                        emit(side=side, figure="error", error=str(e)[:2000])
                # the queries: both servers up, in turn
                if loaded:
                    log(f"round {r}/{ROUNDS}: queries on {', '.join(loaded)} in turn")
                    try:
                        run_queries({s: loaded[s] for s in order if s in loaded})
                    except Exception as e:  # noqa: BLE001
                        log(f"queries failed: {e}")
                        emit(side="both", figure="error", error=f"queries: {e}"[:2000])
            finally:
                stop_all()
                if not KEEP:
                    for side in SIDES:
                        shutil.rmtree(os.path.join(rd, side), ignore_errors=True)
    finally:
        stop_all()
        if KEEP:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


# --- the table ----------------------------------------------------------------------------


def report(path):
    rows = [json.loads(line) for line in open(path) if line.strip().startswith("{")]
    setup = next((r for r in rows if r.get("figure") == "setup"), {})
    # the median over the rounds of every timed figure; counts: the smallest
    by = {}
    for r in rows:
        if r.get("side"):
            by.setdefault((r["side"], r["figure"]), []).append(r)
    fig = {}
    for k, rs in by.items():
        f = dict(rs[0])
        for key in ("rate", "median", "min", "max", "per_point", "secs", "acked_secs", "bytes", "cpu", "per_cpu"):
            if all(isinstance(x.get(key), (int, float)) for x in rs):
                f[key] = statistics.median(x[key] for x in rs)
        if all(isinstance(x.get("stored"), int) for x in rs):
            f["stored"] = min(x["stored"] for x in rs)
        if k[1] == "load-after":
            f = rs[-1]
        f["all"] = rs
        fig[k] = f
    m = lambda f: fig.get(("midge", f))  # noqa: E731
    i = lambda f: fig.get(("influx", f))  # noqa: E731
    out = []
    p = out.append
    n = setup.get("points", 0)

    def num(x, unit=""):
        return "—" if x is None else f"{x:,.0f}{unit}"

    def ratio(a, b):
        return "—" if a is None or b in (None, 0) else f"**{a / b:.2f}×**"

    def status(a, b, goal, higher):
        if a is None or b in (None, 0):
            return "not measured"
        r = a / b
        return "met" if (r >= goal if higher else r <= goal) else "**not met**"

    def counted(r):
        if r is None:
            return ""
        s, total = r.get("stored"), r["points"]
        what = "all" if s == total else f"{s:,} of {total:,}"
        return f" ({what} counted)"

    rounds = setup.get("rounds", 1)
    if rounds > 1:
        p(f"Medians of {rounds} rounds (midge and InfluxDB in turn, the order alternating).\n")
    p("| figure | midge | InfluxDB 1.6 | midge/InfluxDB | goal | status |")
    p("|---|---:|---:|---:|---|---|")
    a, b = m("ingest"), i("ingest")
    ra, rb = (a or {}).get("rate"), (b or {}).get("rate")
    p(f"| ingest, {n:,} points of one series (midge: MQTT QoS 1 → `tsdb` rule, committed; "
      f"InfluxDB: HTTP line protocol, batches of {setup.get('batch', 5000):,}) | "
      f"{num(ra, ' points/s')}{counted(a)} | {num(rb, ' points/s')}{counted(b)} | {ratio(ra, rb)} | ≥ 1× | "
      f"{status(ra, rb, 1, True)} |")
    ca, cb = (a or {}).get("per_cpu"), (b or {}).get("per_cpu")
    if ca or cb:
        cpu = lambda r: "" if not r or not r.get("cpu") else f" ({r['cpu']:.1f} CPU-s, {r['cpu'] / r['secs'] * 100:.0f} %)"  # noqa: E731
        p(f"| ingest per server CPU-second | {num(ca, ' points')}{cpu(a)} | {num(cb, ' points')}{cpu(b)} | "
          f"{ratio(ca, cb)} | | |")
    for name, label in (("write-mb", f"{setup.get('b_series', 0)} × {setup.get('b_per', 0):,}"),
                        ("write-mc", f"{setup.get('c_series', 0)} × {setup.get('c_per', 0):,}")):
        a, b = m(name), i(name)
        ra, rb = (a or {}).get("rate"), (b or {}).get("rate")
        if a or b:
            p(f"| write over HTTP, batches of {setup.get('batch', 5000):,} ({label} points; data of "
              f"query {'b' if name == 'write-mb' else 'c'}) | {num(ra, ' points/s')}{counted(a)} | "
              f"{num(rb, ' points/s')}{counted(b)} | {ratio(ra, rb)} | — | |")
    labels = {
        "a": f"query (a): Avg per 1 minute over the {n:,} points of one series",
        "b": f"query (b): {setup.get('b_series', 0)} series, region in 2 of 4, group by host, Avg per 10 minutes",
        "c": f"query (c): last value of {setup.get('c_series', 0):,} series (group by host)",
    }
    for q in "abc":
        a, b = m(f"query-{q}"), i(f"query-{q}")
        ma, mb = (a or {}).get("median"), (b or {}).get("median")
        shape = lambda r: "" if r is None else f" ({r['groups']} groups, {r['rows']:,} rows)"  # noqa: E731
        p(f"| {labels[q]}, median of {setup.get('runs')} (the sides in turn) | "
          f"{'—' if ma is None else f'{ma * 1000:.1f} ms'}{shape(a)} | "
          f"{'—' if mb is None else f'{mb * 1000:.1f} ms'}{shape(b)} | {ratio(ma, mb)} | ≤ 1× | "
          f"{status(ma, mb, 1, False)} |")
    a, b = m("disk"), i("disk")
    da, db = (a or {}).get("per_point"), (b or {}).get("per_point")
    p(f"| disk per datapoint (the {n:,} ingested points; midge: series files after a checkpoint; "
      f"InfluxDB: data + wal after snapshot and compaction) | "
      f"{'—' if da is None else f'{da:.2f} B'} | {'—' if db is None else f'{db:.2f} B'} | "
      f"{ratio(da, db)} | ≤ 2× | {status(da, db, 2, False)} |")
    agree = []
    for q in "abc":
        a, b = m(f"query-{q}"), i(f"query-{q}")
        if a and b:
            same = (a["groups"], a["rows"]) == (b["groups"], b["rows"])
            sa, sb = a.get("sample"), b.get("sample")
            close = bool(sa and sb and abs(float(sa[1]) - float(sb[1])) < 1e-6)
            when = "" if not close or sa[0] == sb[0] else (
                f" (its timestamp: midge {sa[0]}, the window's start; InfluxDB {sb[0]}, the point's)")
            agree.append(f"({q}) {'same' if same else 'DIFFERENT'} groups and rows, first value "
                         f"{'equal' + when if close else f'DIFFERENT ({sa} vs {sb})'}")
    c = m("publisher-ceiling")
    if c:
        p(f"| the publisher's own ceiling (same client, QoS 1 to a topic no rule takes) | "
          f"{num(c['rate'], ' msg/s')} | | | | |")
    if rounds > 1:
        per = []
        for side, name in (("midge", "midge"), ("influx", "InfluxDB")):
            parts = []
            for f, key, fmt_ in (("ingest", "rate", lambda v: f"{v / 1000:,.0f}k/s"),
                                 ("query-a", "median", lambda v: f"{v * 1000:.0f} ms"),
                                 ("query-b", "median", lambda v: f"{v * 1000:.0f} ms"),
                                 ("query-c", "median", lambda v: f"{v * 1000:.0f} ms"),
                                 ("disk", "per_point", lambda v: f"{v:.2f} B")):
                r = fig.get((side, f))
                if r:
                    parts.append(f"{f} " + " / ".join(fmt_(x[key]) for x in r["all"]))
            if parts:
                per.append(f"{name}: " + ", ".join(parts))
        if per:
            p("\nEach round: " + "; ".join(per) + ".")
    if (setup.get("persist_sync", "batch"), setup.get("series_sync", "full")) != ("batch", "full"):
        p(f"\n**Not midge's defaults:** [persistence] sync = \"{setup.get('persist_sync')}\", "
          f"[series] synchronous = \"{setup.get('series_sync')}\".")
    if agree:
        p("\nAnswers compared: " + "; ".join(agree) + ".")
    loads = []
    for side, name in (("midge", "midge"), ("influx", "InfluxDB")):
        lb, la = fig.get((side, "load-before")), fig.get((side, "load-after"))
        if lb and la:
            loads.append(f"{name} {' '.join(lb['loadavg'])} → {' '.join(la['loadavg'])}")
    if loads:
        p(f"\nLoad average (1/5/15 min) before → after each side: {'; '.join(loads)}.")
    for r in rows:
        if r.get("figure") == "error":
            p(f"\n**{r['side']} failed:** `{r['error'][:300]}`")
    a, b = m("ingest"), i("ingest")
    if a and a.get("acked_secs"):
        p(f"\nmidge ingest: all PUBACKs after {a['acked_secs']:.2f} s, last point readable after "
          f"{a['secs']:.2f} s.")
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "report":
        print(report(sys.argv[2]))
    else:
        main()
