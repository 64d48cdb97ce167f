#!/usr/bin/env python3
"""End-to-end node benchmarks on loopback, with only the standard library.

    scripts/bench_node.py [--deed PATH] [--runs N] [--blob-mib M] [--json PATH]

1. Direct-call latency: starts `deed dev` in a temporary folder, publishes
   examples/mlp/model.onnx, then times N runs of each, as separate processes, after a
   warm-up:
     - `deed run examples/mlp/model.onnx -i x.npy` (local canonical execution);
     - `deed infer MODEL --mode none -i x.npy` (signs a request, calls the executor's
       /v1/execute, verifies its signed receipt, prints the output).
   Reports medians of the wall time and the overhead infer - run (target <= 5 ms), and
   the in-process figure `deed infer --json` reports (request to verified answer)
   against `deed run --repeat`'s median execution time.
2. Blob throughput: uploads then downloads an M MiB random file with
   `deed blob put` / `deed blob get` (chunked, every chunk verified on both sides) and
   compares the bytes per second with a plain loopback copy of the same bytes through
   a TCP socket, one way then back (target >= 0.8 of it).

Builds nothing: pass --deed (default: target/release/deed, else target/debug/deed,
under CARGO_TARGET_DIR when set). Build first with
`cargo build --release -p deed-cli`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def find_deed(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    for p in (target / "release" / "deed", target / "debug" / "deed"):
        if p.is_file():
            return p
    sys.exit("no deed binary found: build with `cargo build --release -p deed-cli` or pass --deed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DevNode:
    def __init__(self, deed: Path, data: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [str(deed), "dev", "--data-dir", str(data), "--http", f"127.0.0.1:{self.port}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.keys: list[str] = []
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.time() + 60
        while not self.ready.wait(0.05):
            if self.proc.poll() is not None:
                sys.exit(f"deed dev exited with {self.proc.returncode}")
            if time.time() > deadline:
                sys.exit("deed dev did not start")

    # `deed dev` lists its funded accounts as `  I  0xADDRESS  0xSECRET` and prints
    # `... listening on http://ADDR` once its API accepts connections.
    ACCOUNT = re.compile(r"^\s*\d+\s+0x[0-9a-fA-F]{40}\s+0x([0-9a-fA-F]{64})\s*$")

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            m = self.ACCOUNT.match(line)
            if m:
                self.keys.append(m.group(1))
            if "listening on http://" in line:
                self.ready.set()

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def run(cmd: list[str], env: dict) -> tuple[float, str]:
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return dt, r.stdout


def loopback_copy(data: bytes) -> float:
    """Seconds to send `data` through a loopback TCP socket and back."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def echo():
        conn, _ = srv.accept()
        buf = bytearray()
        while len(buf) < len(data):
            chunk = conn.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
        conn.sendall(buf)
        conn.close()

    th = threading.Thread(target=echo)
    th.start()
    t = time.perf_counter()
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(data)
    got = bytearray()
    while len(got) < len(data):
        chunk = c.recv(1 << 20)
        if not chunk:
            break
        got += chunk
    dt = time.perf_counter() - t
    c.close()
    th.join()
    srv.close()
    assert bytes(got) == data
    return dt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deed")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--blob-mib", type=int, default=64)
    ap.add_argument("--json")
    a = ap.parse_args()
    deed = find_deed(a.deed)
    model = ROOT / "examples/mlp/model.onnx"
    x = ROOT / "examples/mlp/x.npy"
    results: dict = {"deed": str(deed)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        node = DevNode(deed, tmp / "node")
        try:
            if not node.keys:
                sys.exit("deed dev printed no dev account keys")
            env = dict(os.environ, DEED_NODE=node.url, DEED_KEY=node.keys[-1],
                       DEED_HOME=str(tmp / "home"))
            _, out = run([str(deed), "--json", "model", "publish", "bench-mlp", str(model)], env)
            model_id = str(json.loads(out)["model"])

            infer = [str(deed), "--json", "infer", model_id, "--mode", "none", "-i", str(x)]
            local = [str(deed), "run", str(model), "-i", str(x)]
            for cmd in (infer, local):
                run(cmd, env)  # warm-up: page cache, the executor's model cache
            t_infer, t_run, in_proc = [], [], []
            for _ in range(a.runs):
                dt, out = run(infer, env)
                t_infer.append(dt)
                in_proc.append(json.loads(out)["latency_ms"])
                dt, _ = run(local, env)
                t_run.append(dt)
            _, out = run([str(deed), "--json", "run", str(model), "-i", str(x),
                          "--repeat", "100"], env)
            exec_ms = json.loads(out)["latency_ms"]["median"]
            med = lambda v: statistics.median(v) * 1e3
            results["latency"] = {
                "runs": a.runs,
                "deed_run_process_ms": med(t_run),
                "deed_infer_none_process_ms": med(t_infer),
                "added_ms": med(t_infer) - med(t_run),
                "infer_in_process_ms": statistics.median(in_proc),
                "run_execute_ms": exec_ms,
            }

            blob = os.urandom(a.blob_mib << 20)
            src = tmp / "blob.bin"
            src.write_bytes(blob)
            t = time.perf_counter()
            _, out = run([str(deed), "--json", "blob", "put", str(src)], env)
            up = time.perf_counter() - t
            cid = json.loads(out)["cid"]
            t = time.perf_counter()
            run([str(deed), "--json", "blob", "get", cid, "--out", str(tmp / "back.bin")], env)
            down = time.perf_counter() - t
            assert (tmp / "back.bin").read_bytes() == blob
            copy = min(loopback_copy(blob) for _ in range(3))
            size = len(blob)
            results["blob"] = {
                "mib": a.blob_mib,
                "upload_mib_s": size / up / 2**20,
                "download_mib_s": size / down / 2**20,
                "upload_plus_download_mib_s": 2 * size / (up + down) / 2**20,
                "loopback_copy_mib_s": 2 * size / copy / 2**20,
                "ratio": (2 * size / (up + down)) / (2 * size / copy),
            }
        finally:
            node.stop()
    lat, b = results["latency"], results["blob"]
    print(f"deed run (process)            {lat['deed_run_process_ms']:8.2f} ms")
    print(f"deed infer --mode none        {lat['deed_infer_none_process_ms']:8.2f} ms")
    print(f"added by the network path     {lat['added_ms']:8.2f} ms  (target <= 5)")
    print(f"  infer, request to answer    {lat['infer_in_process_ms']:8.2f} ms in process")
    print(f"  run, execution only         {lat['run_execute_ms']:8.3f} ms")
    print(f"blob upload                   {b['upload_mib_s']:8.1f} MiB/s")
    print(f"blob download                 {b['download_mib_s']:8.1f} MiB/s")
    print(f"upload + download             {b['upload_plus_download_mib_s']:8.1f} MiB/s")
    print(f"loopback copy, there and back {b['loopback_copy_mib_s']:8.1f} MiB/s")
    print(f"ratio                         {b['ratio']:8.2f}  (target >= 0.8)")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
