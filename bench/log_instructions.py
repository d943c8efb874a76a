"""The prediction log's cost in CPU instructions per request (not a test): deterministic where throughput is not.

    .venv/bin/python bench/log_instructions.py [--project DIR] [--turns 80]

serve_bench.py --log measures the log's cost as throughput over HTTP, which moves by 10 % and more from
one round to the next on a shared machine. This counts instructions instead: the app in process (the same
ASGI app uvicorn serves, its lifespan run, no HTTP), driven in turns of 64 concurrent single-row /predict
requests of the example's 30 numbers, under valgrind's cachegrind (Debian: apt-get install valgrind),
with and without a JSONL prediction log. Instructions per request are the difference between a run of
--turns turns and one of 20 (start-up and warm-up cancel out), divided by the requests between them;
repeated runs agree to about 1,000 instructions (the log's clock-driven steps follow the run's speed).

Under valgrind the program runs about 50 times slower, so the log's clock-driven steps are slowed to
match (sealing every 10 s instead of 0.2 s, the entries' clock read every 50 ms instead of 1 ms): per
request they happen as often as at full speed. What instructions leave out: the HTTP server's work for the
X-Request-ID header, the kernel's for the file, cache misses; so the throughput cost is somewhat higher.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONCURRENT = 64
WARM_TURNS = 20
SLOWDOWN = 50  # valgrind's, about: the log's clock-driven intervals are stretched by it


def drive(project: Path, turns: int) -> None:
    """In this process: the app, WARM_TURNS turns then `turns` turns of CONCURRENT requests (run under valgrind)."""
    sys.path[:0] = [str(REPO), str(REPO / "src")]
    import app.predict.prediction_log as prediction_log
    from app.main import create_app

    prediction_log.FLUSH_SECONDS *= SLOWDOWN
    prediction_log.CLOCK_SECONDS *= SLOWDOWN
    body = json.dumps(json.loads((project / "request_model.json").read_text())).encode()
    app = create_app()
    headers = [(b"host", b"127.0.0.1"), (b"token", b"bench-token"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]  # fmt: skip
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http", "path": "/predict",
             "raw_path": b"/predict", "query_string": b"", "root_path": "", "headers": headers, "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 2)}  # fmt: skip

    async def request() -> None:
        sent = []

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            sent.append(message)

        await app(dict(scope), receive, send)
        assert sent[0]["status"] == 200, sent

    async def main() -> None:
        async with app.router.lifespan_context(app):
            for _ in range(WARM_TURNS + turns):
                await asyncio.gather(*[request() for _ in range(CONCURRENT)])

    asyncio.run(main())


def count(project: Path, turns: int, log_folder: Path | None) -> int:
    """Instructions valgrind counts for a whole run (start-up included)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": "sqlite:///database.db", "MLFLOW_DISABLE_TELEMETRY": "true", "API_TOKEN": "bench-token",
           "TAND_CONFIG": str(project / "config.json"), "MODEL_REFRESH_INTERVAL": "0", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONHASHSEED": "0", "PREDICTION_LOG": str(log_folder or "")}  # fmt: skip
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
               sys.executable, __file__, "--drive", str(turns), "--project", str(project)]  # fmt: skip
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode != 0 or not found:
        raise SystemExit(f"the run under valgrind failed:\n{done.stderr[-3000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", help="a project folder with a trained model (database.db, config.json)")
    parser.add_argument("--turns", type=int, default=80, help=f"measured turns of {CONCURRENT} requests (beyond the {WARM_TURNS} subtracted)")
    parser.add_argument("--drive", type=int, help=argparse.SUPPRESS)  # internal: the run valgrind measures
    args = parser.parse_args()
    if args.drive is not None:
        drive(Path(args.project).resolve(), args.drive)
        return
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind not found: apt-get install valgrind")
    sys.path.insert(0, str(REPO / "bench"))
    from serve_bench import prepare_project

    project = prepare_project(args)
    scratch = Path(tempfile.mkdtemp(prefix="log-instructions-"))
    runs = {"unlogged": None, "logged (JSONL)": scratch / "prediction-log"}
    print(f"counting instructions: {len(runs) * 2} runs under valgrind, two at a time (a few minutes) ...", flush=True)
    with ThreadPoolExecutor(2) as pool:
        counted = {name: (pool.submit(count, project, 0, folder), pool.submit(count, project, args.turns, folder)) for name, folder in runs.items()}
        per_request = {name: (long.result() - short.result()) / (args.turns * CONCURRENT) for name, (short, long) in counted.items()}
    written = sum(sum(1 for _ in path.open("rb")) for path in runs["logged (JSONL)"].glob("*.jsonl"))
    print(f"\ninstructions per single-row /predict request, in process, {CONCURRENT} concurrent ({args.turns} turns)")
    for name, value in per_request.items():
        print(f"  {name:<16}{value:>10,.0f}")
    base = per_request["unlogged"]
    print(f"logged/unlogged: {100 * per_request['logged (JSONL)'] / base:.1f} % ({per_request['logged (JSONL)'] - base:+,.0f} a request); "
          f"{written} entries written by the two logged runs")


if __name__ == "__main__":
    main()
