"""A bounded loopback load on API replicas, one JSON line per request (run as a separate process).

    python team_loadgen.py --out FILE --stop FILE --seconds 30 [--interval 0.05] --body FILE --token T PORT:PID:SLOTS ...

Each slot is one keep-alive connection sending /predict requests, one at a time, at most one
per --interval (a paced closed loop: the load is bounded by slots / interval). PID is the uvicorn process serving PORT; with
--workers, each connection is traced to the worker process that accepted it (through /proc),
and the slots of one port spread over its workers, so every worker's answers are seen.
Stops at --seconds or when the stop file appears, whichever is first.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import threading
import time


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _inode(local: str, remote: str) -> str | None:
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                return fields[9]
    return None


def _holders(inode: str | None, candidates: list[int]) -> list[int]:
    if inode is None:
        return []
    target, found = f"socket:[{inode}]", []
    for pid in candidates:
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == target for fd in os.listdir(f"/proc/{pid}/fd")):
                found.append(pid)
        except OSError:
            continue
    return found


def serving_processes(port: int, pid: int) -> list[int]:
    """The processes under `pid` that accept connections on `port` (uvicorn's workers share the listening socket)."""
    listening = _inode(f"0100007F:{port:04X}", "00000000:0000")
    workers = [p for p in _holders(listening, descendants(pid)) if p != pid]
    return workers or [pid]


def socket_owner(server_port: int, client_port: int, candidates: list[int]) -> int | None:
    """The process holding the server side of the loopback connection client_port → server_port."""
    holders = _holders(_inode(f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"), candidates)
    return holders[0] if holders else None


class Target:
    def __init__(self, spec: str):
        port, pid, slots = spec.split(":")
        self.port, self.pid, self.slots = int(port), int(pid), int(slots)
        self.workers = serving_processes(self.port, self.pid)
        self.claimed: set[int] = set()
        self.lock = threading.Lock()


class Slot(threading.Thread):
    def __init__(self, target: Target, args, sink):
        super().__init__(daemon=True)
        self.target, self.args, self.sink = target, args, sink
        self.connection: http.client.HTTPConnection | None = None
        self.worker: int | None = None

    def _connect(self) -> None:
        """Open connections until one lands on a worker no other slot of this port holds (when one is left)."""
        for _ in range(40):
            connection = http.client.HTTPConnection("127.0.0.1", self.target.port, timeout=30)
            connection.connect()
            client_port = connection.sock.getsockname()[1]
            worker = None
            for _ in range(50):  # the server accepts asynchronously
                worker = socket_owner(self.target.port, client_port, self.target.workers)
                if worker is not None:
                    break
                time.sleep(0.01)
            with self.target.lock:
                free = set(self.target.workers) - self.target.claimed
                if worker is not None and (worker in free or not free):
                    self.target.claimed.add(worker)
                    self.connection, self.worker = connection, worker
                    return
            connection.close()
        raise RuntimeError(f"no free worker reached on port {self.target.port}")

    def run(self) -> None:
        headers = {"TOKEN": self.args.token, "Content-Type": "application/json"}
        while not done(self.args):
            if self.connection is None:
                try:
                    self._connect()
                except (OSError, RuntimeError) as exc:
                    self.sink({"port": self.target.port, "worker": None, "t0": time.time(), "t1": time.time(),
                               "status": None, "error": f"connect: {type(exc).__name__}: {exc}"})  # fmt: skip
                    time.sleep(0.1)
                    continue
            started = time.time()
            record = {"port": self.target.port, "worker": self.worker, "t0": started}
            try:
                self.connection.request("POST", "/predict", self.args.body, headers)
                answer = self.connection.getresponse()
                payload = answer.read()
                record["status"] = answer.status
                record["header"] = answer.getheader("X-Model-Version")
                record["version"] = json.loads(payload).get("model_version") if answer.status == 200 else None
            except (OSError, http.client.HTTPException, ValueError) as exc:
                record["status"], record["error"] = None, f"{type(exc).__name__}: {exc}"
                self.connection.close()
                with self.target.lock:
                    self.target.claimed.discard(self.worker)
                self.connection = None
            record["t1"] = time.time()
            self.sink(record)
            # Pace each slot: the load stays bounded, and the machine keeps room for training and reloads.
            pause = started + self.args.interval - time.time()
            if pause > 0:
                time.sleep(pause)


def done(args) -> bool:
    return time.time() >= args.deadline or os.path.exists(args.stop)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--stop", required=True)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--interval", type=float, default=0.05, help="Seconds between one slot's request starts.")
    parser.add_argument("--body", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("targets", nargs="+")
    args = parser.parse_args()
    args.deadline = time.time() + args.seconds
    with open(args.body) as f:
        args.body = f.read()
    lock = threading.Lock()
    out = open(args.out, "a", buffering=1)

    def sink(record: dict) -> None:
        with lock:
            out.write(json.dumps(record) + "\n")

    slots = [
        Slot(target, args, sink) for spec in args.targets for target in [Target(spec)] for _ in range(target.slots)
    ]
    for slot in slots:
        slot.start()
    for slot in slots:
        slot.join()
    out.close()


# -- used by the test process: which version each worker serves, and what the records say ------------


def process_versions(port: int, pid: int) -> dict[int, int | None]:
    """The version each serving process under `pid` reports on /health/ready (None: not ready).

    Workers share the listening socket, so new connections are opened until every worker answered."""
    workers = serving_processes(port, pid)
    versions: dict[int, int | None] = {}
    for _ in range(20 * len(workers)):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("GET", "/health/ready")
            answer = connection.getresponse()
            body = json.loads(answer.read() or b"{}")
            owner = socket_owner(port, connection.sock.getsockname()[1], workers)
        except (OSError, http.client.HTTPException, ValueError):
            return {}
        finally:
            connection.close()
        versions[owner] = body.get("model_version") if answer.status == 200 else None
        if set(versions) >= set(workers):
            break
    return versions


def convergence(records: list[dict], keys, version: int, moved_at: float, until: float) -> dict:
    """Per (port, worker): seconds from the alias move to its first answer with `version`.
    No answer with another version may follow that one (before `until`)."""
    per_key = {}
    for key in keys:
        mine = sorted(
            (r for r in records if (r["port"], r["worker"]) == key and moved_at <= r["t0"] < until),
            key=lambda r: r["t0"],
        )
        first = next((r for r in mine if r.get("version") == version), None)
        assert first is not None, f"process {key} never answered with version {version}"
        relapse = [r for r in mine if r["t0"] > first["t1"] and r.get("version") != version]
        assert not relapse, f"process {key} answered {relapse[0].get('version')} after switching to {version}"
        per_key[key] = first["t1"] - moved_at
    return per_key


def latency_ms(records: list[dict], start: float, end: float) -> dict:
    """p50 / p95 / max of the successful requests started in [start, end)."""
    values = sorted((r["t1"] - r["t0"]) * 1000 for r in records if start <= r["t0"] < end and r.get("status") == 200)
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 1),
        "p95": round(values[min(len(values) - 1, int(0.95 * len(values)))], 1),
        "max": round(values[-1], 1),
    }


if __name__ == "__main__":
    main()
