"""Serving benchmark (not a test): this API against `mlflow models serve` and a bare FastAPI endpoint.

    .venv/bin/python bench/serve_bench.py [--project DIR] [--duration 5] [--rounds 3] [--log]

On 127.0.0.1, with one registered model version, it starts:
  this API            uvicorn --factory app.main:create_app, one worker (the compiled NumPy path)
  this API, DataFrame the same app forced onto the pipeline's DataFrame path, loaded through MLflow (the before)
  this API, one by one the same app predicting each request on its own (no coalescing of concurrent requests)
  this API, unfrozen  the same app without freezing its start-up heap (full garbage collections walk it)
  mlflow serve        mlflow models serve --env-manager local -w 1, the same version
  bare FastAPI        a FastAPI endpoint returning a constant JSON, same uvicorn settings: the HTTP ceiling
  bare ASGI           a plain ASGI callable returning the same JSON: what uvicorn itself allows, for reference
and drives each with wrk (POST from a Lua script) at 1 and 64 connections, interleaved, repeated,
then times a 1,000-row batch and cold starts (process launch to the first 200 on the predict path).
Without --project it trains the template's example config (5 epochs: the network's size, not its accuracy,
sets the speed) into a temporary project. Needs wrk (Debian: apt-get install wrk).

With --log it measures only the prediction log's cost: this API with and without PREDICTION_LOG (a JSONL
folder), interleaved at 64 connections (and 1), and prints the throughput ratio logged/unlogged, the server's
CPU per request, the entries written and dropped, and the CPU the log's writer thread and its encoding used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from example import write_example  # bench/example.py: run as a script, bench/ is on the path
from machine import machine_speed

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "breast_cancer.csv"  # the template's example, whatever data/ holds
TOKEN = "bench-token"
UVICORN = ["--host", "127.0.0.1", "--workers", "1", "--no-access-log", "--log-level", "warning"]


# -- harness ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: bytes, headers: dict, timeout: float = 30) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class Target:
    def __init__(self, name, command, path, body, headers, env, cwd):
        self.name, self.command, self.path, self.body, self.headers = name, command, path, body, headers
        self.env, self.cwd, self.process, self.port = env, cwd, None, None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self, timeout: float = 180) -> float:
        """Launch; seconds until the first 200 on the predict path (the cold start)."""
        self.port = free_port()
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        started = time.perf_counter()
        self.process = subprocess.Popen(command, cwd=self.cwd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited: {self.process.stderr.read().decode()[-2000:]}")
            try:
                if post(self.url, self.body, self.headers, timeout=5)[0] == 200:
                    return time.perf_counter() - started
            except OSError:
                pass
            time.sleep(0.02)
        raise SystemExit(f"{self.name} gave no 200 within {timeout}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds used so far by a process and its descendants (mlflow models serve forks its uvicorn)."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    tree, total = {root}, 0.0
    for _ in range(4):  # a few levels are plenty here
        tree |= {pid for pid, (ppid, _) in stats.items() if ppid in tree}
    for pid in tree:
        total += stats.get(pid, (0, 0.0))[1]
    return total


def wait_idle(target: Target, timeout: float = 120) -> None:
    """Wait until the server has worked off what a load run left queued (closed connections do not cancel
    requests already read): otherwise its leftover work would slow whichever server is measured next."""
    deadline = time.monotonic() + timeout
    last = tree_cpu_seconds(target.process.pid)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = tree_cpu_seconds(target.process.pid)
        if now - last < 0.02:  # under 8 % of one core over the interval
            return
        last = now


LUA = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {{"requests": %d, "seconds": %f, "errors": %d, "non2xx": %d, "p50_us": %d, "p99_us": %d}}\\n',
    summary.requests, summary.duration / 1e6, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk(target: Target, connections: int, duration: int, workdir: Path) -> dict:
    headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in target.headers.items())
    script = workdir / "post.lua"
    script.write_text(LUA.format(body=json.dumps(target.body.decode()), headers=headers))
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", str(script), target.url]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result = json.loads(output.split("RESULT ", 1)[1].splitlines()[0])
    result["rps"] = result["requests"] / result["seconds"]
    return result


def prepare_project(args) -> Path:
    if args.project:
        return Path(args.project).resolve()
    project = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    config = write_example(project / "data" / "data.csv")  # not config.json: a fork's describes its own data
    config["train"].update(epochs=5, data_path="data/data.csv")
    (project / "config.json").write_text(json.dumps(config))
    print(f"training the default model (5 epochs) into {project} ...", flush=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": "sqlite:///database.db", "MLFLOW_DISABLE_TELEMETRY": "true"}
    subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO), "train", "--quiet"], cwd=project, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return project


def batch_rows(n: int, names: list[str]) -> list[dict]:
    import csv

    with open(EXAMPLE, newline="") as file:
        rows = [{k: float(row[k]) for k in names} for row in csv.DictReader(file)]
    return [rows[i % len(rows)] for i in range(n)]


def time_batch(target: Target, body: bytes, repeats: int = 20) -> dict:
    server, wall = [], []
    for _ in range(2):  # warm-up: the first large body grows buffers
        post(target.url, body, target.headers)
    for _ in range(repeats):
        started = time.perf_counter()
        status, headers, _ = post(target.url, body, target.headers)
        wall.append((time.perf_counter() - started) * 1000)
        assert status == 200, f"{target.name}: batch answered {status}"
        timing = {k.lower(): v for k, v in headers.items()}.get("server-timing", "")
        if "dur=" in timing:
            server.append(float(timing.split("dur=")[1]))
    return {"wall_ms": statistics.median(wall), "server_ms": statistics.median(server) if server else None}


def cold_starts(target: Target, times: int, fresh_cache=None) -> list[float]:
    seconds = []
    for _ in range(times):
        if fresh_cache is not None:
            target.env = {**target.env, "MODEL_CACHE_DIR": tempfile.mkdtemp(dir=fresh_cache)}
        seconds.append(target.start())
        target.stop()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", help="a project folder with a trained model (database.db, config.json)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--cold", type=int, default=3, help="cold starts per server")
    parser.add_argument("--log", action="store_true", help="only the prediction log's cost: this API with and without it")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    speed_before = machine_speed()
    project = prepare_project(args)
    sys.path[:0] = [str(REPO), str(REPO / "src")]
    from tand.tracking.lookup import lookup_alias

    config = json.loads((project / "config.json").read_text())
    name = config["mlflow"]["model_name"]
    version = lookup_alias(f"sqlite:///{project / 'database.db'}", name, "production").version
    request = json.loads((project / "request_model.json").read_text())
    scratch = Path(tempfile.mkdtemp(prefix="serve-bench-run-"))
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": "sqlite:///database.db",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "API_TOKEN": TOKEN,
        "TAND_CONFIG": str(project / "config.json"),
        "MODEL_CACHE_DIR": str(scratch / "cache"),
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")]),
        # mlflow models serve runs `uvicorn` from PATH: the venv's.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    uvicorn = [sys.executable, "-m", "uvicorn", "--factory", *UVICORN, "--port", "{port}"]
    bench_dir = ["--app-dir", str(REPO / "bench")]
    one = json.dumps(request).encode()
    auth = {"TOKEN": TOKEN}
    mlflow = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", f"models:/{name}/{version}",
              "--env-manager", "local", "-w", "1", "-h", "127.0.0.1", "-p", "{port}"]
    targets = {
        "this API": Target("this API", [*uvicorn, "app.main:create_app"], "/predict", one, auth, env, project),
        "this API, DataFrame": Target("this API, DataFrame", [*uvicorn, *bench_dir, "bench_apps:dataframe_app"], "/predict", one, auth,
                                      {**env, "MODEL_CACHE_DIR": ""}, project),
        "this API, one by one": Target("this API, one by one", [*uvicorn, *bench_dir, "bench_apps:uncoalesced_app"], "/predict", one,
                                       auth, env, project),
        "this API, unfrozen": Target("this API, unfrozen", [*uvicorn, *bench_dir, "bench_apps:unfrozen_app"], "/predict", one,
                                     auth, env, project),
        "mlflow models serve": Target("mlflow models serve", mlflow, "/invocations", json.dumps({"dataframe_records": [request]}).encode(),
                                      {}, env, project),
        "bare FastAPI": Target("bare FastAPI", [*uvicorn, *bench_dir, "bench_apps:bare_app"], "/predict", one, auth, env, project),
        "bare ASGI": Target("bare ASGI", [*uvicorn, *bench_dir, "bench_apps:bare_asgi"], "/predict", one, auth, env, project),
    }
    print(f"model {name} version {version}; {os.cpu_count()} CPUs; wrk -t1, {args.duration}s runs, {args.rounds} rounds", flush=True)
    if args.log:
        log_cost(targets["this API"], scratch, args)
        print(f"\nmachine speed (a fixed 20M-iteration Python loop): {speed_before:.2f} s before the runs, {machine_speed():.2f} s after")
        return

    cold = {"this API (first load, no snapshot)": cold_starts(targets["this API"], args.cold, fresh_cache=scratch)}
    cold["this API, pipeline through MLflow"] = cold_starts(targets["this API, DataFrame"], 1)
    targets["this API"].env = env
    targets["this API"].start()  # writes the snapshot a restart reads
    targets["this API"].stop()
    cold["this API (restart, snapshot)"] = cold_starts(targets["this API"], args.cold)
    cold["mlflow models serve"] = cold_starts(targets["mlflow models serve"], args.cold)
    cold["bare FastAPI"] = cold_starts(targets["bare FastAPI"], args.cold)
    cold["bare ASGI"] = cold_starts(targets["bare ASGI"], 1)

    results: dict = {}
    try:
        for target in targets.values():
            target.start()
            wrk(target, 8, 1, scratch)  # warm-up
            wait_idle(target)
        rows = batch_rows(1000, list(request))
        batch = {
            "this API": time_batch(targets["this API"], json.dumps(rows).encode()),
            "this API, DataFrame": time_batch(targets["this API, DataFrame"], json.dumps(rows).encode()),
            "mlflow models serve": time_batch(targets["mlflow models serve"], json.dumps({"dataframe_records": rows}).encode()),
        }
        for round_ in range(args.rounds):
            order = list(targets.values())
            order = order[round_ % len(order):] + order[: round_ % len(order)]
            for connections in (1, 64):
                for target in order:
                    results.setdefault((target.name, connections), []).append(wrk(target, connections, args.duration, scratch))
                    wait_idle(target)
            print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    finally:
        for target in targets.values():
            target.stop()
    report(results, batch, cold)
    print(f"\nmachine speed (a fixed 20M-iteration Python loop): {speed_before:.2f} s before the runs, {machine_speed():.2f} s after")


def log_cost(plain: Target, scratch: Path, args) -> None:
    """This API with and without the prediction log (a JSONL folder), interleaved; ratio of throughputs."""
    folder = scratch / "prediction-log"
    logged = Target("this API, logged", plain.command, plain.path, plain.body, plain.headers,
                    {**plain.env, "PREDICTION_LOG": str(folder)}, plain.cwd)
    results: dict = {}
    try:
        for target in (plain, logged):
            target.start()
            wrk(target, 8, 1, scratch)  # warm-up
            wait_idle(target)
        for round_ in range(args.rounds):
            for connections in (64, 1):
                for target in ((plain, logged) if round_ % 2 == 0 else (logged, plain)):
                    cpu = tree_cpu_seconds(target.process.pid)
                    result = wrk(target, connections, args.duration, scratch)
                    # The server's CPU time per request: on a shared machine, steadier than requests per second.
                    result["cpu_us"] = (tree_cpu_seconds(target.process.pid) - cpu) * 1e6 / max(result["requests"], 1)
                    results.setdefault((target.name, connections), []).append(result)
                    wait_idle(target)
            pair = [results[(t.name, 64)][-1]["rps"] for t in (logged, plain)]
            print(f"round {round_ + 1}/{args.rounds} done: 64 connections, logged/unlogged {100 * pair[0] / pair[1]:.0f} %", flush=True)
        _, _, scraped = get(logged.url.replace("/predict", "/metrics"), logged.headers)
        dropped = sum(float(line.split()[-1]) for line in scraped.decode().splitlines() if line.startswith("tand_prediction_log_dropped_total"))
    finally:
        for target in (plain, logged):
            target.stop()  # the logged one writes what is still waiting before it exits
    written = sum(sum(1 for _ in path.open("rb")) for path in folder.glob("*.jsonl"))
    said = [line for line in logged.process.stderr.read().decode(errors="replace").splitlines() if "writer thread used" in line]
    writer_cpu = float(said[-1].split("used ")[1].split(" s")[0]) if said else None
    encode_cpu = float(said[-1].split("event loop ")[1].split(" s")[0]) if said and "event loop " in said[-1] else 0.0
    sent = sum(r["requests"] for (name, _), runs in results.items() if name == logged.name for r in runs)
    median = lambda name, connections, key: statistics.median(r[key] for r in results[(name, connections)])  # noqa: E731
    print("\nsingle-row predict with and without the prediction log, wrk -t1 (median of rounds)")
    print(f"{'server':<22}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU µs/req':>12}{'errors':>8}")
    for (name, connections), runs in sorted(results.items(), key=lambda item: (-item[0][1], item[0][0])):
        errors = sum(r["errors"] + r["non2xx"] for r in runs)
        print(f"{name:<22}{connections:>6}{median(name, connections, 'rps'):>10.0f}{median(name, connections, 'p50_us') / 1000:>9.2f}"
              f"{median(name, connections, 'p99_us') / 1000:>9.2f}{median(name, connections, 'cpu_us'):>12.1f}{errors:>8}")
    for connections in (64, 1):
        ratio = median(logged.name, connections, "rps") / median(plain.name, connections, "rps")
        paired = statistics.median(a["rps"] / b["rps"] for a, b in zip(results[(logged.name, connections)], results[(plain.name, connections)]))
        cpu = median(logged.name, connections, "cpu_us") / median(plain.name, connections, "cpu_us")
        print(f"logged/unlogged at {connections} connection(s): throughput {100 * ratio:.1f} % (median of rounds' ratios "
              f"{100 * paired:.1f} %), CPU per request {100 * cpu:.1f} %")
    print(f"entries: {written} written, {dropped:.0f} dropped, of {sent} requests answered in the measured runs (plus warm-up)")
    if writer_cpu is not None and written:
        per_entry, encoding = writer_cpu * 1e6 / written, encode_cpu * 1e6 / written
        print(f"writer thread: {writer_cpu:.2f} s of CPU, {per_entry:.1f} µs an entry; encoding on the event loop: {encode_cpu:.2f} s, "
              f"{encoding:.1f} µs an entry; together {100 * (per_entry + encoding) / median(plain.name, 64, 'cpu_us'):.1f} % "
              f"of the unlogged server's CPU per request at 64 connections")


def get(url: str, headers: dict, timeout: float = 30) -> tuple[int, dict, bytes]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as answer:
        return answer.status, dict(answer.headers), answer.read()


def report(results: dict, batch: dict, cold: dict) -> None:
    def median(name, connections, key):
        return statistics.median(r[key] for r in results[(name, connections)])

    print("\nsingle-row predict, wrk -t1 (median of rounds)")
    print(f"{'server':<22}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for (name, connections), runs in sorted(results.items(), key=lambda item: (item[0][1], item[0][0])):
        errors = sum(r["errors"] + r["non2xx"] for r in runs)
        print(f"{name:<22}{connections:>6}{median(name, connections, 'rps'):>10.0f}"
              f"{median(name, connections, 'p50_us') / 1000:>9.2f}{median(name, connections, 'p99_us') / 1000:>9.2f}{errors:>8}")
    for connections in (1, 64):
        this = median("this API", connections, "rps")
        print(f"ratios at {connections} connection(s): this/mlflow {this / median('mlflow models serve', connections, 'rps'):.1f}x, "
              f"this/ceiling {100 * this / median('bare FastAPI', connections, 'rps'):.0f} %, "
              f"compiled/DataFrame {this / median('this API, DataFrame', connections, 'rps'):.1f}x, "
              f"coalesced/one by one {this / median('this API, one by one', connections, 'rps'):.2f}x, "
              f"frozen/unfrozen {this / median('this API, unfrozen', connections, 'rps'):.2f}x, "
              f"this/bare ASGI {100 * this / median('bare ASGI', connections, 'rps'):.0f} %")
    print("\n1,000-row batch (median of 20)")
    for name, figures in batch.items():
        server = f"server {figures['server_ms']:.1f} ms, " if figures["server_ms"] is not None else ""
        print(f"  {name:<22}{server}round trip {figures['wall_ms']:.1f} ms")
    print("\ncold start: process launch to the first 200 on the predict path (seconds)")
    for name, seconds in cold.items():
        print(f"  {name:<38}median {statistics.median(seconds):.2f}  (runs: {', '.join(f'{s:.2f}' for s in seconds)})")


if __name__ == "__main__":
    main()
