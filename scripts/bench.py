#!/usr/bin/env python3
"""Benchmark `deed run` against onnxruntime and tract on the same models and inputs.

    "$(scripts/venv.sh)" scripts/bench.py [--repeat N] [--rounds R] [--model NAME]... [--json PATH]

Steps:
  1. writes the benchmark models with scripts/gen_models.py into target/bench-models;
  2. builds `deed` (deed-cli) and the tract example (deed-runtime/examples/tract_run.rs)
     in release mode;
  3. for every model, times in separate child processes: `deed run --threads 1` and
     `--threads 2`, `deed run --no-trace` at 1 and 2 threads (the cost of trace
     hashing, and the kernels alone at 2 threads) and
     `deed run --hash-inline` (the trace hashed on the executing thread instead of on
     the hashing thread that overlaps it with compute), `deed run --trace-cost` (traced
     and untraced runs in turn in one process, the trace's cost under one load and one
     placement of threads on cores), onnxruntime with intra_op_num_threads 1 and 2 (sequential
     execution, default graph optimizations) and tract; each child reports the median
     and minimum of N runs after a warm-up, load time excluded; the peak RSS of each
     child comes from wait4(). The children run in R interleaved rounds (deed, ort,
     tract, deed, ort, tract, ...) so that load from other processes on a shared
     machine hits every runtime alike; a configuration's figures are the minimum of
     its minima and the median of its medians over the rounds;
  4. prints a table with the ratios deed/ort(1t), deed/ort(2t), deed/tract (on the
     minimum, the figure least disturbed by other load, and on the median), the trace
     overhead, its floor on two cores (see `schedule_floor`: from each step's compute
     and hashing time, which `DEED_PROFILE=1` reports, the least time any split of the
     hashing between the two cores allows, since a step's outputs can be hashed only
     once computed), the peak memory, and the largest deviation of deed's outputs
     from onnxruntime's; then the trace cost split by where the traced run's extra
     time goes (`trace_split`, from `deed run --timeline`), with the steps whose
     kernels tracing slows most;
  5. checks determinism: `deed run --json` must report the same trace_root with
     --threads 1, 2 and 4 and with DEED_KERNELS=reference, one line per model.

Exits non-zero if any run failed or any trace root differs. Run it with the venv's
python (it needs numpy and onnxruntime); the timing children use the same python.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ["mlp_b1", "mlp_b64", "cnn", "transformer", "mlp_int8"]


@dataclass
class Run:
    """One timed child process."""

    median_ms: float | None = None
    min_ms: float | None = None
    rss_mib: float | None = None
    report: dict = field(default_factory=dict)
    error: str | None = None


def run_child(cmd: list[str], env: dict | None = None) -> tuple[dict, float]:
    """Runs cmd, parses its stdout as JSON, returns (json, peak RSS in MiB)."""
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=env)
        assert p.stdout is not None
        out = p.stdout.read()
        # wait4 reaps this very child and gives its own rusage, unlike
        # RUSAGE_CHILDREN whose ru_maxrss is a maximum over every child so far.
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"exit {p.returncode}: {' | '.join(tail)}")
    text = out.decode(errors="replace").strip()
    try:
        report = json.loads(text.splitlines()[-1]) if text else {}
    except json.JSONDecodeError as e:
        raise RuntimeError(f"output is not JSON ({e}): {text[:200]!r}") from None
    return report, usage.ru_maxrss / 1024.0


PROFILE_LINE = re.compile(r"^step\s+(\d+)\s+\S+\s+([\d.]+) us compute\s+([\d.]+) us hash$")


def step_profile(cmd: list[str]) -> list[tuple[float, float]] | None:
    """Median compute and hashing time of each step, in µs, over the runs of `cmd`
    with DEED_PROFILE=1 (each step timed, then hashed inline and timed)."""
    proc = subprocess.run(cmd, env={**os.environ, "DEED_PROFILE": "1"}, capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    per: dict[int, tuple[list[float], list[float]]] = {}
    for line in proc.stderr.splitlines():
        m = PROFILE_LINE.match(line.strip())
        if m:
            c, h = per.setdefault(int(m.group(1)), ([], []))
            c.append(float(m.group(2)))
            h.append(float(m.group(3)))
    if not per:
        return None
    return [(statistics.median(per[i][0]), statistics.median(per[i][1])) for i in sorted(per)]


def schedule_floor(steps: list[tuple[float, float]]) -> float | None:
    """The least trace cost, relative to the compute time C, of any schedule on two
    cores: steps compute one after another (one kernel thread), and step i's hashing
    (h_i) can start only when step i has computed, at P_i = c_0 + ... + c_i, but may be
    split in any way over both cores. From P_i on, the remaining compute and the
    hashing of steps i and later, W_i, need at least W_i / 2 more, so no schedule ends
    before max(C, max_i P_i + W_i / 2), nor (i = -1) before (C + H) / 2."""
    c_total = sum(c for c, _ in steps)
    if c_total <= 0:
        return None
    after_c = c_total
    after_h = sum(h for _, h in steps)
    best = max(c_total, (after_c + after_h) / 2)
    done = 0.0
    for c, h in steps:
        done += c
        after_c -= c
        best = max(best, done + (after_c + after_h) / 2)
        after_h -= h
    return best / c_total - 1


def trace_split(traced: list[str], untraced: list[str], rounds: int) -> dict | None:
    """Where a traced run's extra time goes, from `deed run --timeline` (the figures of
    the fastest run over `rounds` interleaved pairs of children, as the latency
    ratios use the minimum, the figure least disturbed by other load): its
    steps' kernels run slower (the hashing thread reads what they wrote), the time
    between steps grows (handoffs to the hashing thread, small steps hashed inline),
    and the trace completes after the last step (the tail). Each as a fraction of the
    untraced run's time; the three add up to about the trace cost."""
    figures: dict[str, list[dict]] = {"traced": [], "untraced": []}
    # Each step's least kernel time over every run of every child, per configuration.
    step_min: dict[str, dict[int, float]] = {"traced": {}, "untraced": {}}
    ops: dict[int, str] = {}
    for _ in range(rounds):
        for key, cmd in (("traced", traced), ("untraced", untraced)):
            try:
                report, _ = run_child(cmd)
            except RuntimeError:
                return None
            if "timeline_us" not in report:
                return None
            figures[key].append(report["timeline_us"]["fastest"])
            for st in report["timeline_us"].get("steps", []):
                i = st["step"]
                ops[i] = st.get("op") or "?"
                step_min[key][i] = min(step_min[key].get(i, float("inf")), st["compute_min"])
    t, u = (min(figures[k], key=lambda r: r["total"]) for k in ("traced", "untraced"))
    added = sorted(((step_min["traced"][i] - step_min["untraced"][i], i)
                    for i in step_min["traced"] if i in step_min["untraced"]), reverse=True)
    if u["total"] <= 0:
        return None
    return {
        "traced_us": t,
        "untraced_us": u,
        "cost": t["total"] / u["total"] - 1,
        "kernels": (t["steps"] - u["steps"]) / u["total"],
        "between_steps": (t["between_steps"] - u["between_steps"]) / u["total"],
        "tail": (t["tail"] - u["tail"]) / u["total"],
        # The steps whose kernels traced runs slow down most (least times compared).
        "slowed_steps": [{"step": i, "op": ops[i], "untraced_us": step_min["untraced"][i],
                          "traced_us": step_min["traced"][i], "added_us": d} for d, i in added[:3]],
    }


def timed(cmd: list[str], env: dict | None = None) -> Run:
    try:
        report, rss = run_child(cmd, env)
        lat = report["latency_ms"]
        return Run(float(lat["median"]), float(lat["min"]), rss, report)
    except (RuntimeError, KeyError, TypeError, ValueError, OSError) as e:
        return Run(error=f"{' '.join(cmd[:3])}…: {e}")


def combine(rounds: list[Run]) -> Run:
    """One configuration over several rounds: min of minima, median of medians, max RSS."""
    bad = [r for r in rounds if r.error or r.median_ms is None]
    if not rounds or bad:
        return bad[0] if bad else Run()
    return Run(
        statistics.median(r.median_ms for r in rounds),
        min(r.min_ms for r in rounds),
        max(r.rss_mib for r in rounds),
        rounds[-1].report,
    )


# ---------------------------------------------------------------------------
# onnxruntime child


def ort_child(case_dir: str, threads: int, repeat: int) -> None:
    import numpy as np
    import onnxruntime as ort

    case = load_case(case_dir)
    feeds = {i["name"]: np.load(os.path.join(case_dir, i["file"])) for i in case["inputs"]}
    start = time.perf_counter()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(os.path.join(case_dir, case["model"]), so, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - start) * 1e3
    sess.run(None, feeds)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t) * 1e3)
    print(json.dumps({
        "runtime": "onnxruntime " + ort.__version__,
        "load_ms": load_ms,
        "latency_ms": {"median": statistics.median(times), "min": min(times)},
    }))


# ---------------------------------------------------------------------------
# Orchestration


def load_case(case_dir: str) -> dict:
    with open(os.path.join(case_dir, "case.json")) as f:
        return json.load(f)


def sh(cmd: list[str], **kw) -> None:
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=REPO, **kw)


def target_dir() -> str:
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        check=True, cwd=REPO, capture_output=True, text=True,
    )
    return json.loads(meta.stdout)["target_directory"]


def max_deviation(case_dir: str, case: dict, out_dir: str) -> str:
    """Largest |deed - onnxruntime| over all outputs, or why it is unknown."""
    import numpy as np

    worst = 0.0
    for o in case["outputs"]:
        path = os.path.join(out_dir, o["name"] + ".npy")
        if not os.path.exists(path):
            return "no --out"
        got, want = np.load(path), np.load(os.path.join(case_dir, o["file"]))
        if got.shape != want.shape:
            return f"shape {got.shape}"
        if got.size:
            worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))))
    return f"{worst:.2e}"


def fmt_ms(r: Run) -> str:
    if r.median_ms is None or r.min_ms is None:
        return "ERR" if r.error else "-"
    return f"{r.min_ms:.3f}/{r.median_ms:.3f}"


def ratio(a: Run, b: Run, use_min: bool = False) -> float | None:
    x, y = (a.min_ms, b.min_ms) if use_min else (a.median_ms, b.median_ms)
    if x is None or y is None or y == 0:
        return None
    return x / y


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def fmt_mib(r: Run) -> str:
    return "-" if r.rss_mib is None else f"{r.rss_mib:.0f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=200, help="timed runs per child process (after a warm-up)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of child processes per configuration")
    p.add_argument("--model", action="append", default=[], choices=MODELS, help="only this model (repeatable)")
    p.add_argument("--json", metavar="PATH", help="also write every measurement as JSON here")
    p.add_argument("--models-dir", default=os.path.join(REPO, "target", "bench-models"))
    p.add_argument("--no-build", action="store_true", help="use the binaries already built")
    p.add_argument("--ort-child", nargs=3, metavar=("CASE_DIR", "THREADS", "REPEAT"), help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.ort_child:
        ort_child(args.ort_child[0], int(args.ort_child[1]), int(args.ort_child[2]))
        return 0
    if args.repeat < 2:
        p.error("--repeat must be at least 2 (deed run reports latency only for repeated runs)")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    models = args.model or MODELS

    sh([sys.executable, os.path.join(REPO, "scripts", "gen_models.py"), args.models_dir])
    if not args.no_build:
        sh(["cargo", "build", "--release", "-p", "deed-cli"])
        sh(["cargo", "build", "--release", "-p", "deed-runtime", "--example", "tract_run"])
    release = os.path.join(target_dir(), "release")
    deed = os.path.join(release, "deed")
    tract = os.path.join(release, "examples", "tract_run")
    for binary in (deed, tract):
        if not os.access(binary, os.X_OK):
            print(f"bench: {binary} is missing; build it or drop --no-build", file=sys.stderr)
            return 1
    help_text = subprocess.run([deed, "run", "--help"], capture_output=True, text=True).stdout
    has_no_trace = "--no-trace" in help_text
    has_hash_inline = "--hash-inline" in help_text
    has_trace_cost = "--trace-cost" in help_text
    has_timeline = "--timeline" in help_text
    rep = str(args.repeat)

    results: dict[str, dict] = {}
    failed = False
    scratch = tempfile.mkdtemp(prefix="deed-bench-")
    try:
        for name in models:
            case_dir = os.path.join(args.models_dir, name)
            case = load_case(case_dir)
            model = os.path.join(case_dir, case["model"])
            input_args: list[str] = []
            tract_inputs: list[str] = []
            for i in case["inputs"]:
                spec = f"{i['name']}={os.path.join(case_dir, i['file'])}"
                input_args += ["--input", spec]
                tract_inputs += ["--input", spec]
            out_dir = os.path.join(scratch, name)

            def deed_cmd(threads: int, *extra: str) -> list[str]:
                return [deed, "run", model, *input_args, "--threads", str(threads), "--json", *extra]

            print(f"bench: {name}", file=sys.stderr, flush=True)
            configs = {
                "deed_1t": deed_cmd(1, "--repeat", rep, "--out", out_dir),
                "ort_1t": [sys.executable, os.path.abspath(__file__), "--ort-child", case_dir, "1", rep],
                "tract": [tract, model, *tract_inputs, "--repeat", rep],
                "deed_1t_no_trace": deed_cmd(1, "--repeat", rep, "--no-trace") if has_no_trace else None,
                "deed_1t_hash_inline": deed_cmd(1, "--repeat", rep, "--hash-inline") if has_hash_inline else None,
                "deed_1t_in_turn": deed_cmd(1, "--repeat", rep, "--trace-cost") if has_trace_cost else None,
                "deed_2t": deed_cmd(2, "--repeat", rep),
                "deed_2t_no_trace": deed_cmd(2, "--repeat", rep, "--no-trace") if has_no_trace else None,
                "ort_2t": [sys.executable, os.path.abspath(__file__), "--ort-child", case_dir, "2", rep],
            }
            per_round: dict[str, list[Run]] = {k: [] for k in configs}
            for _ in range(args.rounds):
                for k, cmd in configs.items():
                    if cmd is not None:
                        per_round[k].append(timed(cmd))
            runs = {k: combine(v) for k, v in per_round.items()}
            traced = ratio(runs["deed_1t"], runs["deed_1t_no_trace"], use_min=True)
            traced_inline = ratio(runs.get("deed_1t_hash_inline", Run()), runs["deed_1t_no_trace"], use_min=True)
            # The trace's cost measured within each child (traced and untraced runs in
            # turn): by the minima, the least over the rounds; by the pairs, the median.
            in_turn = [r.report.get("trace_cost") for r in per_round["deed_1t_in_turn"] if r.error is None]
            in_turn = [c for c in in_turn if c]
            deviation = max_deviation(case_dir, case, out_dir) if runs["deed_1t"].error is None else "-"
            profile = step_profile(deed_cmd(1, "--repeat", rep))
            split = trace_split(deed_cmd(1, "--repeat", rep, "--timeline"),
                                deed_cmd(1, "--repeat", rep, "--timeline", "--no-trace"),
                                args.rounds) if has_timeline else None

            # Determinism: the trace root may not depend on threads or kernels.
            roots: dict[str, str | None] = {}
            for label, threads, env in [
                ("threads=1", 1, None),
                ("threads=2", 2, None),
                ("threads=4", 4, None),
                ("DEED_KERNELS=reference", 1, {**os.environ, "DEED_KERNELS": "reference"}),
            ]:
                try:
                    report, _ = run_child(deed_cmd(threads), env)
                    roots[label] = report.get("trace_root")
                except RuntimeError as e:
                    print(f"bench: {name} {label}: {e}", file=sys.stderr)
                    roots[label] = None
            distinct = {r for r in roots.values()}
            same = len(distinct) == 1 and None not in distinct
            results[name] = {
                "runs": {k: vars(v) for k, v in runs.items()},
                "ratios": {
                    "deed_over_ort_1t_min": ratio(runs["deed_1t"], runs["ort_1t"], use_min=True),
                    "deed_over_ort_1t_median": ratio(runs["deed_1t"], runs["ort_1t"]),
                    "deed_over_ort_2t_min": ratio(runs["deed_2t"], runs["ort_2t"], use_min=True),
                    "deed_over_ort_2t_median": ratio(runs["deed_2t"], runs["ort_2t"]),
                    "deed_over_tract_min": ratio(runs["deed_1t"], runs["tract"], use_min=True),
                    "deed_over_tract_median": ratio(runs["deed_1t"], runs["tract"]),
                    "trace_overhead_min": None if traced is None else traced - 1,
                    "trace_overhead_inline_min": None if traced_inline is None else traced_inline - 1,
                    "trace_overhead_in_turn_min": min((c["by_min"] for c in in_turn), default=None),
                    "trace_overhead_in_turn_paired": statistics.median(c["paired_median"] for c in in_turn)
                    if in_turn else None,
                    "trace_overhead_in_turn_per_round": [c["by_min"] for c in in_turn],
                    # Hashing the whole trace takes H = inline - no-trace of one core's time;
                    # with a second core to share it, no schedule beats max(C, (C + H) / 2),
                    # so the trace costs at least max(0, (H - C) / 2) / C ...
                    "trace_floor_two_cores": None if traced_inline is None
                    else max(0.0, (traced_inline - 2) / 2),
                    # ... and, since a step is hashed only once computed, at least this
                    # (from the steps' profiled times).
                    "trace_floor_schedule": None if profile is None else schedule_floor(profile),
                    "deed_no_trace_over_ort_1t_min": ratio(runs["deed_1t_no_trace"], runs["ort_1t"], use_min=True),
                    "deed_no_trace_over_ort_2t_min": ratio(runs.get("deed_2t_no_trace", Run()), runs["ort_2t"], use_min=True),
                },
                "trace_split": split,
                "max_abs_deviation_from_ort": deviation,
                "trace_roots": roots,
                "deterministic": same,
            }
            for k, r in runs.items():
                if r.error:
                    failed = True
                    print(f"bench: {name} {k}: {r.error}", file=sys.stderr)
            failed |= not same
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print_table(results, has_no_trace, args.repeat, args.rounds)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"repeat": args.repeat, "rounds": args.rounds, "no_trace_flag": has_no_trace,
                       "models": results}, f, indent=2)
            f.write("\n")
    return 1 if failed else 0


def print_table(results: dict[str, dict], has_no_trace: bool, repeat: int, rounds: int) -> None:
    def grid(head: list[str], rows: list[list[str]]) -> None:
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
        for row in [head, *rows]:
            print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                            for i, (c, w) in enumerate(zip(row, widths))))

    def both(r: dict, key: str) -> str:
        return f"{fmt_ratio(r[key + '_min'])} ({fmt_ratio(r[key + '_median'])})"

    print(f"latency in ms as min/median over {rounds} rounds of {repeat} runs after a warm-up "
          "(load excluded); ratios on the minimum, the median's ratio in parentheses")
    rows = []
    for name, res in results.items():
        runs = {k: Run(**v) for k, v in res["runs"].items()}
        r = res["ratios"]
        rows.append([
            name, fmt_ms(runs["deed_1t"]), fmt_ms(runs["ort_1t"]), both(r, "deed_over_ort_1t"),
            fmt_ms(runs["deed_2t"]), fmt_ms(runs["ort_2t"]), both(r, "deed_over_ort_2t"),
            fmt_ms(runs["tract"]), both(r, "deed_over_tract"),
        ])
    grid(["model", "deed 1t", "ort 1t", "deed/ort 1t", "deed 2t", "ort 2t", "deed/ort 2t",
          "tract 1t", "deed/tract"], rows)
    print()
    print("trace: deed 1t with tracing (hashing thread, and --hash-inline) vs --no-trace (minimum); "
          "in turn: deed 1t --trace-cost, traced and untraced runs alternating in one process "
          "(the least of the rounds' cost by the minima, and the median of their pair ratios' "
          "medians in parentheses); "
          "floor: the least trace cost two cores allow, from each step's compute and hashing "
          "time (DEED_PROFILE=1): steps compute in order, a step's hashing starts once it has "
          "computed and may be split perfectly over both cores, nothing else added; "
          "deed 2t no-trace: the kernels alone at 2 threads (on a 2-core machine the traced 2t "
          "run's kernel threads take every core, and hash its steps between their shares); "
          "peak RSS in MiB (the ort child includes the Python interpreter and numpy)")
    rows = []
    for name, res in results.items():
        runs = {k: Run(**v) for k, v in res["runs"].items()}
        r = res["ratios"]
        def pct(key: str) -> str:
            if not has_no_trace:
                return "N/A"
            return "-" if r.get(key) is None else f"{100 * r[key]:+.1f}%"

        rows.append([
            name, fmt_ms(runs["deed_1t_no_trace"]), fmt_ratio(r.get("deed_no_trace_over_ort_1t_min")),
            pct("trace_overhead_min"),
            f"{pct('trace_overhead_in_turn_min')} ({pct('trace_overhead_in_turn_paired')})",
            pct("trace_overhead_inline_min"), pct("trace_floor_schedule"),
            fmt_ms(runs.get("deed_2t_no_trace", Run())), fmt_ratio(r.get("deed_no_trace_over_ort_2t_min")),
            res["max_abs_deviation_from_ort"],
            fmt_mib(runs["deed_1t"]), fmt_mib(runs["ort_1t"]), fmt_mib(runs["tract"]),
        ])
    grid(["model", "deed 1t no-trace", "/ort 1t", "trace cost", "in turn", "trace inline", "floor",
          "deed 2t no-trace", "/ort 2t", "|Δ| vs ort",
          "RSS deed", "RSS ort", "RSS tract"], rows)
    print()
    print("trace cost split (deed 1t --timeline, traced and --no-trace, interleaved; the fastest "
          "run of each): the run's time, the extra time of its kernels, between its steps (handoffs, small "
          "steps hashed inline) and after its last step until the trace is complete (tail), each "
          "relative to the untraced run; then the hashing done on the hashing thread and on the "
          "run's thread, in µs; the steps whose kernels tracing slows most (each step's least "
          "time traced against untraced)")
    rows = []
    for name, res in results.items():
        sp = res.get("trace_split")
        if not sp:
            rows.append([name, "-", "-", "-", "-", "-", "-", "-", "-", "-"])
            continue
        t, u = sp["traced_us"], sp["untraced_us"]
        slowed = ", ".join(f"{x['step']} {x['op']} {x['untraced_us']:.1f}→{x['traced_us']:.1f}"
                           for x in sp.get("slowed_steps", [])) or "-"
        rows.append([
            name, f"{u['total'] / 1e3:.3f}", f"{t['total'] / 1e3:.3f}", f"{100 * sp['cost']:+.1f}%",
            f"{100 * sp['kernels']:+.1f}%", f"{100 * sp['between_steps']:+.1f}%", f"{100 * sp['tail']:+.1f}%",
            f"{t['hash_thread']:.0f}", f"{t['hash_run_thread']:.0f}", slowed,
        ])
    grid(["model", "untraced ms", "traced ms", "cost", "kernels", "between steps", "tail",
          "hashed on thread", "hashed on run", "most slowed steps (µs)"], rows)
    print()
    for name, res in results.items():
        roots = res["trace_roots"]
        if res["deterministic"]:
            root = next(iter(roots.values()))
            print(f"determinism {name}: same trace_root {root} for threads 1/2/4 and DEED_KERNELS=reference")
        else:
            detail = ", ".join(f"{k}: {v or 'failed'}" for k, v in roots.items())
            print(f"determinism {name}: MISMATCH {detail}")


if __name__ == "__main__":
    sys.exit(main())
