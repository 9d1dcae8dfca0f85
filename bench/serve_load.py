"""Load test on loopback: `transferkit serve` (PyTorch fp32 and the ONNX int8 export) against the server a user
would write by hand (bench/serve_peer.py: FastAPI calling transformers.pipeline per request), with locust.

    python bench/serve_load.py bench/work/rtall/full_a1fefc_s1 --seconds 20
    python bench/serve_load.py RUN --users 1,8,32,128 --swap-to OTHER_RUN/export

For each server, one at a time on the same machine: closed-loop locust users (1 text per request, no think time)
at each concurrency for `--seconds`: throughput, p50/p95/p99 latency, failures and 429s. Then, on ours:
past capacity (128 users against a queue of 16 inputs: it must answer 429, never fail otherwise), and a hot
swap in the middle of a 32-user run (0 failed requests; /v1/model and /metrics report the new version).
Writes bench/results/serve_load.json and .md. Locust runs on the same cores as the server (2 here), for every
server alike; ratios are what to read, not absolute figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parents[1]
WORK = HERE / "bench" / "work" / "serve_load"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    def __init__(self, cmd: list[str], port: int, env: dict | None = None, log: Path | None = None) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(log or os.devnull, "w")
        self.p = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=self.log, stderr=subprocess.STDOUT,
                                  cwd=HERE)
        for _ in range(1200):
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.p.poll() is not None:
                raise RuntimeError(f"server exited: {cmd} (log {log})")
            time.sleep(0.1)
        raise RuntimeError(f"server did not start: {cmd}")

    def stop(self) -> None:
        self.p.terminate()
        try:
            self.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.p.kill()
        self.log.close()


def locust(url: str, users: int, seconds: int, texts: Path, key: str | None, prefix: Path) -> dict:
    env = {**os.environ, "LOAD_TEXTS": str(texts), "LOAD_KEY": key or ""}
    cmd = [str(BIN / "locust"), "-f", str(HERE / "bench/locustfile.py"), "--headless", "-u", str(users), "-r",
           str(users), "-t", f"{seconds}s", "--host", url, "--csv", str(prefix), "--only-summary",
           "--stop-timeout", "10", "--loglevel", "ERROR"]
    subprocess.run(cmd, env=env, cwd=HERE, capture_output=True, text=True)
    with open(f"{prefix}_stats.csv") as f:
        agg = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    fails: dict[str, int] = {}
    if Path(f"{prefix}_failures.csv").exists():
        with open(f"{prefix}_failures.csv") as f:
            for r in csv.DictReader(f):
                msg = "429" if "'429'" in r["Error"] else r["Error"]
                fails[msg] = fails.get(msg, 0) + int(r["Occurrences"])
    n = int(agg["Request Count"])
    f429 = fails.get("429", 0)
    return {"users": users, "requests": n, "failures": int(agg["Failure Count"]) - f429, "status_429": f429,
            "failure_kinds": fails, "rps": float(agg["Requests/s"]), "ok_rps": (n - int(agg["Failure Count"])) / seconds,
            "p50_ms": float(agg["50%"]), "p95_ms": float(agg["95%"]), "p99_ms": float(agg["99%"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a text-classification run folder (its export/ is made when missing)")
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--users", default="1,8,32,128")
    ap.add_argument("--swap-to", default=None, help="run or export folder to hot-swap to (default: a copy of the "
                    "run's export)")
    ap.add_argument("--out", default=str(HERE / "bench/results"))
    a = ap.parse_args()
    users = [int(u) for u in a.users.split(",")]
    run = Path(a.run).resolve()
    WORK.mkdir(parents=True, exist_ok=True)

    from transferkit.config import DataConfig
    from transferkit.data.prepare import load_splits
    from transferkit.deploy.onnx import INT8_FILE
    from transferkit.serve.auth import digest, new_key

    if not (run / "export" / INT8_FILE).is_file():
        from transferkit.recipes.export import export

        export(run, int8=True)
    texts = WORK / "texts.json"
    texts.write_text(json.dumps(load_splits(DataConfig(source="rotten_tomatoes")).test.texts))
    key, admin = new_key(), new_key()
    keys = WORK / "keys.yaml"
    keys.write_text(f"keys:\n  - name: load\n    sha256: {digest(key)}\n    scopes: [predict]\n"
                    f"  - name: admin\n    sha256: {digest(admin)}\n    scopes: [predict, admin]\n")
    tk = [str(BIN / "transferkit"), "serve"]
    servers = {
        "transferkit serve (PyTorch fp32)": (lambda p, extra=(): tk + [str(run), "--port", str(p), "--api-keys",
                                                                       str(keys), *extra], key),
        "transferkit serve (ONNX int8)": (lambda p, extra=(): tk + [str(run / "export"), "--int8", "--port", str(p),
                                                                    "--api-keys", str(keys), *extra], key),
        "FastAPI + pipeline (by hand)": (lambda p, extra=(): [str(BIN / "uvicorn"), "--app-dir", "bench",
                                                              "serve_peer:app", "--port", str(p), "--log-level",
                                                              "warning"], None),
    }
    results: dict[str, list[dict]] = {}
    for name, (cmd, k) in servers.items():
        port = free_port()
        env = {"MODEL": str(run / "model"), "TRANSFERKIT_API_KEYS": ""}
        srv = Proc(cmd(port), port, env, WORK / f"server_{len(results)}.log")
        try:
            locust(srv.url, 4, 3, texts, k, WORK / "warm")  # warm-up
            results[name] = []
            for u in users:
                r = locust(srv.url, u, a.seconds, texts, k, WORK / f"s{len(results)}_u{u}")
                print(name, r, flush=True)
                results[name].append(r)
        finally:
            srv.stop()

    # past capacity: a small queue, many users
    port = free_port()
    srv = Proc(servers["transferkit serve (PyTorch fp32)"][0](port, ("--max-queue", "16", "--max-texts", "16")), port,
               {"TRANSFERKIT_API_KEYS": ""}, WORK / "server_overload.log")
    try:
        overload = locust(srv.url, 128, a.seconds, texts, key, WORK / "overload")
        overload["alive_after"] = httpx.get(srv.url + "/healthz").status_code == 200
    finally:
        srv.stop()
    print("overload", overload, flush=True)

    # hot swap in the middle of a run
    target = Path(a.swap_to).resolve() if a.swap_to else WORK / "swap_export"
    if a.swap_to and (target / "config.resolved.yaml").is_file():  # a run folder: its int8 export
        if not (target / "export" / INT8_FILE).is_file():
            from transferkit.recipes.export import export

            export(target, int8=True)
        target = target / "export"
    if not a.swap_to:
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(run / "export", target)
    port = free_port()
    srv = Proc(servers["transferkit serve (ONNX int8)"][0](port), port, {"TRANSFERKIT_API_KEYS": ""},
               WORK / "server_swap.log")
    try:
        hk = {"Authorization": f"Bearer {admin}"}
        before = httpx.get(srv.url + "/v1/model", headers=hk).json()["version"]
        swap: dict = {}

        def do_swap() -> None:
            time.sleep(a.seconds / 2)
            r = httpx.post(srv.url + "/v1/admin/reload", json={"path": str(target)}, headers=hk, timeout=120)
            swap.update(r.json(), status=r.status_code)

        t = threading.Thread(target=do_swap)
        t.start()
        during = locust(srv.url, 32, a.seconds, texts, key, WORK / "swap")
        t.join()
        after = httpx.get(srv.url + "/v1/model", headers=hk).json()["version"]
        prom = httpx.get(srv.url + "/metrics", headers=hk).text
        swap.update(before=before, after=after, load=during,
                    metrics_reports_new=f'transferkit_model_loaded{{version="{after}"}} 1.0' in prom)
    finally:
        srv.stop()
    print("swap", swap, flush=True)

    import platform

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {"machine": f"{cpu}, {os.cpu_count()} cores", "seconds": a.seconds, "results": results,
            "overload": overload, "swap": swap, "run": str(run)}
    (out / "serve_load.json").write_text(json.dumps(data, indent=2))
    peer = results["FastAPI + pipeline (by hand)"]
    md = [f"# Load test: `transferkit serve` vs FastAPI + pipeline", "",
          f"`python bench/serve_load.py {a.run} --seconds {a.seconds}` on {data['machine']} (server and locust share "
          f"them); {a.seconds} s per row, one Rotten Tomatoes test text per request, closed-loop users.", "",
          "| server | users | requests/s | p50 ms | p95 ms | p99 ms | failed | 429 | throughput vs by hand |",
          "|---|---|---|---|---|---|---|---|---|"]
    for name, rows in results.items():
        for r, p in zip(rows, peer):
            md.append(f"| {name} | {r['users']} | {r['ok_rps']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | "
                      f"{r['p99_ms']:.0f} | {r['failures']} | {r['status_429']} | {r['ok_rps'] / max(p['ok_rps'], 1e-9):.2f}x |")
    md += ["", f"Past capacity (PyTorch fp32, queue limit 16 inputs, 128 users): {overload['ok_rps']:.1f} answered/s, "
           f"{overload['status_429']} answered 429, {overload['failures']} other failures, p99 {overload['p99_ms']:.0f} ms; "
           f"alive afterwards: {overload['alive_after']}.",
           f"Hot swap during 32 users (ONNX int8): {swap['load']['requests']} requests, {swap['load']['failures']} "
           f"failed, {swap['load']['status_429']} 429; version {swap['before']} -> {swap['after']} "
           f"(/metrics reports the new one: {swap['metrics_reports_new']})."]
    (out / "serve_load.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
