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
   the in-process figure `deed infer --json` reports (first request to the node to
   verified answer) against `deed run --repeat`'s median execution time.
2. Blob throughput: N times, uploads then downloads a new M MiB random file with
   `deed blob put FILE` / `deed blob get CID --out FILE` (separate processes; chunked;
   the client hashes the file for its manifest and the node checks every chunk it
   receives; the client checks every chunk it downloads; the blob synced to disk by
   the node before the upload is acknowledged), and copies the same file the plain way: read from the
   file system, sent through a loopback TCP socket, written to a new file on the same
   file system, there and back again (`copy_over_loopback`; no hashing, no fsync, no
   process start). The copy kept "there" stays until the end of the run, as the
   node keeps every blob. Reports medians of each direction and the ratio of upload
   plus download to the plain copy there and back (target >= 0.8). The plain copy
   there is also timed with an fsync of the new file before it counts as done, as
   the node syncs a blob before it acknowledges the upload: the ratio against that
   copy (`ratio_durable`) separates what the disk costs from what the node adds.

   On a virtual machine, the first write into a page of memory the guest never used
   costs a fault in the host: writing a new 64 MiB file into such pages ran at about
   350 MiB/s here, against 3 GiB/s into pages used before. Whichever side got fresh
   pages would look slow, so before timing blobs the script touches (and frees) more
   memory than the runs will write (`warm_memory`).

Builds nothing: pass --deed (default: target/release/deed, else target/debug/deed,
under CARGO_TARGET_DIR when set). Build first with
`cargo build --release -p deed-cli`.
"""

from __future__ import annotations

import argparse
import json
import mmap
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

from deed_binary import find_deed

ROOT = Path(__file__).resolve().parent.parent


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


def warm_memory(nbytes: int) -> None:
    """Touches `nbytes` of fresh anonymous memory, one write per page, and frees it,
    so that the page cache the timed runs fill lands in pages the host has already
    backed (capped at half the memory available)."""
    avail = nbytes
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    n = min(nbytes, avail) // mmap.PAGESIZE * mmap.PAGESIZE
    if n <= 0:
        return
    m = mmap.mmap(-1, n)
    for off in range(0, n, mmap.PAGESIZE):
        m[off] = 1
    m.close()


def copy_over_loopback(src: Path, dst: Path, sync: bool = False) -> float:
    """Seconds to copy file `src` to file `dst` through a loopback TCP socket.

    The sender reads `src` from the file system in 1 MiB pieces and writes them to
    the socket; the receiver writes what it reads from the socket to `dst`, a new
    file beside it, and closes it. No checksums, no framing and, unless `sync`, no
    fsync: the plainest copy of the same bytes over the same path (file system,
    loopback, file system) that `deed blob put` and `deed blob get` take. With
    `sync`, the receiver syncs the file to disk before closing it.
    """
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    piece = 1 << 20

    def receive():
        conn, _ = srv.accept()
        buf = bytearray(piece)
        view = memoryview(buf)
        with conn, open(dst, "wb") as out:
            while True:
                n = conn.recv_into(view)
                if n == 0:
                    break
                out.write(view[:n])
            if sync:
                out.flush()
                os.fsync(out.fileno())

    t = time.perf_counter()
    th = threading.Thread(target=receive)
    th.start()
    with socket.create_connection(("127.0.0.1", port)) as c, open(src, "rb") as f:
        buf = bytearray(piece)
        view = memoryview(buf)
        while True:
            n = f.readinto(view)
            if not n:
                break
            c.sendall(view[:n])
        c.shutdown(socket.SHUT_WR)
        th.join()
    dt = time.perf_counter() - t
    srv.close()
    return dt


def loopback_round_trip(src: Path, there: Path, back: Path) -> tuple[float, float]:
    """Seconds for a plain loopback copy of file `src` there (to the new file
    `there`, which the caller keeps, as the node keeps a blob) and back (from that
    file to the new file `back`), as `deed blob put` then `deed blob get`."""
    up = copy_over_loopback(src, there)
    down = copy_over_loopback(there, back)
    if back.read_bytes() != src.read_bytes():
        sys.exit("loopback copy changed the bytes")
    back.unlink()
    return up, down


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

            # Each run moves a new random file (a blob the node already holds would
            # upload as a no-op), then copies the same file the plain way; medians.
            size = a.blob_mib << 20
            # Each run writes the blob about seven times (source, node, download,
            # the plain copies' three files, page cache of the reads): warm twice that.
            warm_memory(max(2 << 30, 14 * size * a.runs))
            t_up, t_down, c_up, c_down, c_sync = [], [], [], [], []
            for i in range(a.runs):
                src = tmp / f"blob-{i}.bin"
                src.write_bytes(os.urandom(size))
                t = time.perf_counter()
                _, out = run([str(deed), "--json", "blob", "put", str(src)], env)
                t_up.append(time.perf_counter() - t)
                cid = json.loads(out)["cid"]
                back = tmp / f"back-{i}.bin"
                t = time.perf_counter()
                run([str(deed), "--json", "blob", "get", cid, "--out", str(back)], env)
                t_down.append(time.perf_counter() - t)
                if back.read_bytes() != src.read_bytes():
                    sys.exit("deed blob get returned other bytes")
                back.unlink()
                up, down = loopback_round_trip(src, tmp / f"copy-there-{i}.bin",
                                               tmp / f"copy-back-{i}.bin")
                c_up.append(up)
                c_down.append(down)
                synced = tmp / f"copy-synced-{i}.bin"
                c_sync.append(copy_over_loopback(src, synced, sync=True))
                synced.unlink()
                src.unlink()
            mib = lambda secs: size / statistics.median(secs) / 2**20
            both = lambda ups, downs: 2 * size / (statistics.median(ups)
                                                  + statistics.median(downs)) / 2**20
            results["blob"] = {
                "mib": a.blob_mib,
                "runs": a.runs,
                "upload_mib_s": mib(t_up),
                "download_mib_s": mib(t_down),
                "upload_plus_download_mib_s": both(t_up, t_down),
                "copy_there_mib_s": mib(c_up),
                "copy_back_mib_s": mib(c_down),
                "loopback_copy_mib_s": both(c_up, c_down),
                "ratio": both(t_up, t_down) / both(c_up, c_down),
                "copy_there_synced_mib_s": mib(c_sync),
                "ratio_durable": both(t_up, t_down) / both(c_sync, c_down),
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
    print(f"plain copy there              {b['copy_there_mib_s']:8.1f} MiB/s")
    print(f"plain copy back               {b['copy_back_mib_s']:8.1f} MiB/s")
    print(f"plain copy, there and back    {b['loopback_copy_mib_s']:8.1f} MiB/s")
    print(f"ratio                         {b['ratio']:8.2f}  (target >= 0.8)")
    print(f"plain copy there, fsynced     {b['copy_there_synced_mib_s']:8.1f} MiB/s")
    print(f"ratio to it and the copy back {b['ratio_durable']:8.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
