"""Load on `python -m tangpoem.serve`: 1, 8 and 32 concurrent clients, each sending a fixed number of 七绝 requests.

    python benchmarks/bench_serve.py --model-path CKPT                  # starts the server, --workers 1 then 2
    python benchmarks/bench_serve.py --url http://127.0.0.1:8000 --pid PID   # drives a running server

Each client is a thread with one keep-alive connection that sends its requests one after another (the next
when the answer is in): request i of client c is {"form": "七绝", "seed": c * 1000 + i}, so every run asks for
the same poems. Per level it prints p50/p95 latency, poems/s, errors (anything but 200, or a poem that is
not four lines of seven), the server's RSS (all its processes) before and after, and the load average;
then the issue's targets: zero errors, p95 <= 300 ms at 8 clients, poems/s at 32 clients >= 3x that at 1,
RSS flat (within 10% over the run). Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 5) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (uvicorn's supervisor and its worker processes), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def memory_mb(pid: int | None, field: str = "Rss") -> float | None:
    """Rss (what the issue asks) or Pss (shared pages split between processes: the honest sum for
    several workers) of the server's process tree, in MB."""
    if pid is None:
        return None
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def rss_mb(pid: int | None) -> float | None:
    return memory_mb(pid, "Rss")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class Client(threading.Thread):
    def __init__(self, url: str, index: int, count: int, body: dict, start: threading.Barrier):
        super().__init__(daemon=True)
        self.url = urllib.parse.urlsplit(url)
        self.index, self.count, self.body, self.start_barrier = index, count, body, start
        self.latencies: list[float] = []
        self.errors: list[str] = []

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.url.hostname, self.url.port, timeout=120)
        self.start_barrier.wait()
        for i in range(self.count):
            body = json.dumps({**self.body, "seed": self.index * 1000 + i}).encode()
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/api/poems", body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                self.latencies.append(time.perf_counter() - t0)
                if r.status != 200:
                    self.errors.append(f"{r.status}: {data[:120]!r}")
                    continue
                lines = json.loads(data)["poems"][0]["lines"]
                if len(lines) != 4 or any(len(line) != 8 for line in lines):
                    self.errors.append(f"not a 七绝: {lines}")
            except (OSError, http.client.HTTPException, ValueError, KeyError) as err:
                self.latencies.append(time.perf_counter() - t0)
                self.errors.append(f"{type(err).__name__}: {err}")
                conn.close()
                conn = http.client.HTTPConnection(self.url.hostname, self.url.port, timeout=120)
        conn.close()


def run_level(url: str, clients: int, requests: int, body: dict) -> dict:
    barrier = threading.Barrier(clients + 1)
    threads = [Client(url, c, requests, body, barrier) for c in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(x for t in threads for x in t.latencies)
    errors = [e for t in threads for e in t.errors]
    q = statistics.quantiles(lat, n=20, method="inclusive") if len(lat) > 1 else lat * 19
    return {
        "clients": clients, "requests": len(lat), "errors": len(errors), "first_error": errors[0] if errors else "",
        "p50": statistics.median(lat) * 1000, "p95": q[18] * 1000, "poems_s": (len(lat) - len(errors)) / wall,
        "wall": wall,
    }  # fmt: skip


class Server:
    def __init__(self, model_path: str, workers: int, extra: list[str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+b", prefix="bench_serve-", suffix=".log", delete=False)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        cmd = [sys.executable, "-m", "tangpoem.serve", "--model-path", model_path, "--port", str(self.port),
               "--workers", str(workers), *extra]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"the server exited; its log: {self.log.name}")
            try:
                if get(self.url + "/api/health", 2).get("ready"):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            self.stop()
            sys.exit(f"the server did not start in 120 s; its log: {self.log.name}")
        while workers > 1 and Path(self.log.name).read_bytes().count(b"Application startup complete") < workers:
            time.sleep(0.2)  # every worker loaded its model

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def decoded_by(url: str, pid: int | None, tries: int = 40) -> dict | None:
    """The health check's decoder counts from worker pid: each new connection may reach any worker."""
    for _ in range(tries):
        decoded = get(url + "/api/health")["decoded"]
        if decoded.get("pid") == pid:
            return decoded
    return None


def bench(url: str, pid: int | None, label: str, levels: list[int], requests: int, body: dict) -> list[dict]:
    health = get(url + "/api/health")
    m = health["model"]
    shape = f"emb {m.get('embedding_dim')}, {m.get('num_layers')}x{m.get('hidden_dim')} LSTM"
    print(f"## {label}: model {m.get('name')} ({shape}, vocabulary {m.get('vocab_size'):,}, {m.get('steps')} steps)")
    run_level(url, 2, 3, body)  # warm-up: every worker, the token cache, the allocator
    rss0 = rss_mb(pid)
    print(f"{'clients':>7} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p95 ms':>8} {'poems/s':>8} "
          f"{'RSS MB before':>13} {'after':>7} {'req/batch':>9}  load average", flush=True)  # fmt: skip
    results = []
    for clients in levels:
        before, decoded = rss_mb(pid), get(url + "/api/health")["decoded"]
        r = run_level(url, clients, requests, body)
        r["rss_before"], r["rss_after"] = before, rss_mb(pid)
        now = decoded_by(url, decoded.get("pid"))  # with --workers N, the same worker's
        batches = now["batches"] - decoded["batches"] if now else 0
        per_batch = f"{(now['requests'] - decoded['requests']) / batches:.1f}" if batches > 0 else "n/a"
        fmt = lambda x: f"{x:.0f}" if x is not None else "n/a"  # noqa: E731
        print(f"{clients:>7} {r['requests']:>8} {r['errors']:>6} {r['p50']:>8.0f} {r['p95']:>8.0f} "
              f"{r['poems_s']:>8.1f} {fmt(before):>13} {fmt(r['rss_after']):>7} {per_batch:>9}  {load()}",
              flush=True)  # fmt: skip
        if r["first_error"]:
            print(f"   first error: {r['first_error']}")
        results.append(r)
    pss, procs = memory_mb(pid, "Pss"), len(process_tree(pid)) if pid else 0
    if pss is not None:
        print(f"server: {procs} processes, PSS {pss:.0f} MB (RSS counts shared pages once per process)")
    decoded = get(url + "/api/health")["decoded"]
    if decoded["batches"]:
        print(f"requests per write_batch call (one worker's): {decoded['requests'] / decoded['batches']:.2f}")
    targets(results, rss0, rss_mb(pid))
    return results


def targets(results: list[dict], rss0: float | None, rss1: float | None) -> None:
    by = {r["clients"]: r for r in results}
    checks = [("zero errors", all(r["errors"] == 0 for r in results), f"{sum(r['errors'] for r in results)} errors")]
    if 8 in by:
        checks.append(("p95 <= 300 ms at 8 clients", by[8]["p95"] <= 300, f"{by[8]['p95']:.0f} ms"))
    if 1 in by and 32 in by:
        ratio = by[32]["poems_s"] / by[1]["poems_s"]
        checks.append(("poems/s at 32 clients >= 3x at 1", ratio >= 3, f"{ratio:.2f}x"))
    if rss0 and rss1:
        checks.append(("RSS flat (within 10%)", rss1 <= rss0 * 1.1, f"{rss0:.0f} -> {rss1:.0f} MB"))
    for name, ok, value in checks:
        print(f"target {'met   ' if ok else 'MISSED'} {name}: {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", help="start `python -m tangpoem.serve` with this checkpoint")
    parser.add_argument("--url", help="drive an already running server instead (127.0.0.1 only)")
    parser.add_argument("--pid", type=int, help="with --url: the server's process id, for its RSS")
    parser.add_argument("--workers", default="1,2", help="with --model-path: --workers of each run (default: 1,2)")
    parser.add_argument("--clients", default="1,8,32", help="concurrent clients per level (default: 1,8,32)")
    parser.add_argument("--requests", type=int, default=10, help="requests per client per level (default: 10)")
    parser.add_argument("--mode", default="continue", choices=("continue", "acrostic"))
    parser.add_argument("--text", default="", help="start words or heads (default: none, the model begins)")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a request field more, its value JSON (e.g. rhyme_lookahead=0); repeatable")  # fmt: skip
    parser.add_argument("--gather-ms", type=float, help="with --model-path: pass --gather-ms MS to the server")
    parser.add_argument("--num-threads", type=int, help="with --model-path: pass --num-threads N to the server")
    args = parser.parse_args()
    if bool(args.model_path) == bool(args.url):
        parser.error("give --model-path (start a server) or --url (a running one)")
    if args.url and urllib.parse.urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("--url must be on this machine (127.0.0.1)")
    levels = [int(x) for x in args.clients.split(",")]
    body = {"start_words": args.text, "acrostic": args.mode == "acrostic", "form": "七绝"}
    for setting in args.setting:
        name, _, value = setting.partition("=")
        body[name] = json.loads(value)
    print(f"# bench_serve  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  host {platform.node()}")
    print(f"# cpu: {os.cpu_count()} cores, python {platform.python_version()}; load average at start: {load()}")
    print(f"# each client: {args.requests} requests {json.dumps(body, ensure_ascii=False)} with its own seeds")
    if args.url:
        bench(args.url.rstrip("/"), args.pid, args.url, levels, args.requests, body)
        return
    for workers in [int(x) for x in args.workers.split(",")]:
        extra = [] if args.gather_ms is None else ["--gather-ms", str(args.gather_ms)]
        extra += [] if args.num_threads is None else ["--num-threads", str(args.num_threads)]
        server = Server(args.model_path, workers, extra)
        try:
            bench(server.url, server.proc.pid, f"--workers {workers}", levels, args.requests, body)
        finally:
            server.stop()
        print(flush=True)


if __name__ == "__main__":
    main()
