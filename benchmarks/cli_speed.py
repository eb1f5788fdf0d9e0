"""Seconds per DM iteration of the command a user types, with no speed flags, against the reference DM loop;
and the wall time of ``distillset demo``.

    OMP_NUM_THREADS=1 python benchmarks/cli_speed.py --rounds 3 --cli-iterations 2 8 --reference-iterations 1 3
    OMP_NUM_THREADS=1 python benchmarks/cli_speed.py --demo [--demo-args --data-root /nonexistent]
                                                     # times `distillset demo` (after set-up), one cell
    python benchmarks/cli_speed.py --report-only     # rebuild results/cli_speed.json + .md from the cells

* ``cli``: ``distillset distill --method dm --dataset fashion-mnist --ipc 10 --iterations N --out DIR``, a
  separate process per run, nothing else on the command line: whatever the defaults choose (the manifest's
  ``runtime`` record says what ran: precision, compile, threads).
* ``reference``: the reference DM loop (VICO-UoE/DatasetCondensation ``main_DM.py``, re-implemented in
  :func:`dm_speed.reference_style_step`: per-class forward passes, fp32, eager), in a process of its own
  (``--reference-run N``) that loads the data and runs N steps, so both sides pay the same kind of start-up.

A first CLI run (``cli-warmup``, N1 iterations) fills torch.compile's on-disk cache; its extra start-up over a
warm run is what a user's very first run pays once, reported apart. Each side then runs twice per round, with N1
and N2 iterations; the per-iteration time is
(t(N2) - t(N1)) / (N2 - N1) of the processes' wall times, and start-up (imports, data, compilation, the first
step's extra cost, saving) is t(N1) - N1 x that, reported separately. Rounds alternate the order of the two
sides so a slow phase of a shared machine hits both alike; the rows give the median over rounds and the
spread (min, max). Every timed process is a cell (``benchmarks/cells/cli_speed/``): a rerun continues.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, Cells, command_line, markdown_table, write_results  # noqa: E402

NAME = "cli_speed"
ROOT = Path(__file__).resolve().parent.parent
DISTILLSET = Path(sys.executable).with_name("distillset")
CLI_ARGS = ["distill", "--method", "dm", "--dataset", "fashion-mnist", "--ipc", "10"]
TIMING_COMMAND = "python benchmarks/cli_speed.py --rounds 3 --cli-iterations 2 8 --reference-iterations 1 3"


def reference_run(iterations: int) -> None:
    """Load Fashion-MNIST and run ``iterations`` steps of the reference DM loop (this process is timed)."""
    import torch

    from distillset.augment import DSA
    from distillset.data import load_dataset
    from dm_speed import reference_style_step

    splits = load_dataset("fashion-mnist")
    real, info = splits.train, splits.info
    generator = torch.Generator().manual_seed(0)
    synthetic = real.images[: info.num_classes * 10].clone().requires_grad_(True)
    optimizer = torch.optim.SGD([synthetic], lr=1.0, momentum=0.5)
    dsa = DSA("color_crop_cutout_flip_scale_rotate")
    for iteration in range(iterations):
        reference_style_step(real, info, synthetic, optimizer, 10, 256, generator, dsa, iteration)


def timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, all threads) of ``command``; a failure stops the benchmark
    with its output. CPU time hardly depends on what else the machine runs; wall time does."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run_cell(cells: Cells, impl: str, iterations: int, round_index: int | None) -> dict[str, Any]:
    key = f"{impl}-n{iterations}-r{round_index}" if round_index is not None else f"{impl}-warmup"
    record = cells.get(key)
    if record is not None:
        return record
    if impl == "cli":
        out = Path(tempfile.mkdtemp(prefix="cli_speed_"))
        try:
            seconds, cpu = timed([str(DISTILLSET), *CLI_ARGS, "--iterations", str(iterations), "--out", str(out)])
            manifest = json.loads((out / "manifest.json").read_text())
        finally:
            shutil.rmtree(out, ignore_errors=True)
        record = {"seconds": seconds, "cpu_seconds": cpu, "runtime": manifest.get("runtime"), "config": {
            k: manifest["config"].get(k) for k in ("real_precision", "compile", "batch_real", "model")}}
    else:
        seconds, cpu = timed([sys.executable, __file__, "--reference-run", str(iterations)])
        record = {"seconds": seconds, "cpu_seconds": cpu, "runtime": {"precision": "fp32", "compile": False}}
    record.update(impl=impl, iterations=iterations, round=round_index, nice=os.nice(0),
                  load_average=list(os.getloadavg()))
    cells.put(key, record)
    print(key, json.dumps({k: record[k] for k in ("seconds", "cpu_seconds", "runtime", "load_average")}), flush=True)
    return record


def run_demo(cells: Cells, round_index: int, demo_args: list[str]) -> None:
    """Time ``distillset demo`` into a fresh folder (set-up already done: the venv exists)."""
    key = f"demo-r{round_index}"
    if cells.get(key) is not None:
        return
    out = Path(tempfile.mkdtemp(prefix="cli_speed_demo_"))
    try:
        seconds, cpu = timed([str(DISTILLSET), "demo", "--out", str(out), *demo_args])
        summary = json.loads((out / "summary.json").read_text())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    record = {"seconds": seconds, "cpu_seconds": cpu, "demo_args": demo_args, "summary": summary, "nice": os.nice(0),
              "load_average": list(os.getloadavg())}
    cells.put(key, record)
    print(key, json.dumps({"seconds": seconds, "cpu_seconds": cpu, "load_average": record["load_average"]}),
          flush=True)


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
            "max": round(max(values), 4)}


def per_iteration(timing: list[dict[str, Any]], impl: str, measure: str) -> dict[int, tuple[float, float, list[int]]]:
    """Per round: (seconds per iteration, start-up seconds, [N1, N2]) of ``impl`` from its two runs' ``measure``
    (wall ``seconds`` or ``cpu_seconds``)."""
    found = {}
    for round_index in sorted({r["round"] for r in timing if r["impl"] == impl}):
        runs = sorted((r["iterations"], r[measure]) for r in timing if r["impl"] == impl and r["round"] == round_index)
        if len(runs) >= 2:
            (n1, t1), (n2, t2) = runs[0], runs[-1]
            slope = (t2 - t1) / (n2 - n1)
            found[round_index] = (slope, t1 - n1 * slope, [n1, n2])
    return found


def build_rows(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """Per-iteration and start-up seconds per side (wall and CPU), the speed-ups, and the demo's wall time."""
    timing = [r for r in records if r.get("impl") in ("cli", "reference") and r.get("round") is not None]
    runtime = next((r["runtime"] for r in timing if r["impl"] == "cli" and r.get("runtime")), {})
    rows, table, md = [], [], ""
    for measure, metric in (("seconds", "sec_per_iter"), ("cpu_seconds", "cpu_sec_per_iter")):
        sides = {impl: per_iteration(timing, impl, measure) for impl in ("cli", "reference")}
        paired = sorted(set(sides["cli"]) & set(sides["reference"]))
        if not paired:
            continue
        for impl, found in sides.items():  # every complete round of the side
            rounds = sorted(found)
            values, starts = [found[r][0] for r in rounds], [found[r][1] for r in rounds]
            counts = found[rounds[0]][2]
            settings = runtime if impl == "cli" else {"precision": "fp32", "compile": False}
            extra = {"impl": impl, "measure": measure, "rounds": rounds, "per_round": [round(v, 4) for v in values],
                     **spread(values),
                     "startup_seconds": spread(starts), "startup_per_round": [round(t, 2) for t in starts],
                     "iterations_per_run": counts, "settings": settings,
                     "command": (" ".join(["distillset", *CLI_ARGS, "--iterations", "N", "--out", "DIR"])
                                 if impl == "cli" else "python benchmarks/cli_speed.py --reference-run N")}
            rows.append({"dataset": "fashion-mnist", "method": "dm", "ipc": 10, "model": "convnet3", "metric": metric,
                         "mean": round(statistics.median(values), 4), "std": round(statistics.pstdev(values), 4),
                         "n": len(values), "iterations": counts[1] - counts[0], "epochs": 0, "extra": extra})
            table.append({"side": impl, "measure": "wall" if measure == "seconds" else "CPU (all threads)",
                          "s / iteration, median (min-max)": f"{extra['median']} ({extra['min']}-{extra['max']})",
                          "start-up s, median (min-max)": f"{extra['startup_seconds']['median']} "
                          f"({extra['startup_seconds']['min']}-{extra['startup_seconds']['max']})",
                          "runs (iterations)": f"{counts[0]} and {counts[1]}",
                          "settings": json.dumps({k: settings.get(k) for k in ("precision", "compile", "threads")
                                                  if k in settings})})
        ratios = [sides["reference"][r][0] / sides["cli"][r][0] for r in paired]
        rows.append({"dataset": "fashion-mnist", "method": "dm", "ipc": 10, "model": "convnet3",
                     "metric": f"speedup_{metric}", "mean": round(statistics.median(ratios), 2),
                     "std": round(statistics.pstdev(ratios), 2), "n": len(ratios), "iterations": 0, "epochs": 0,
                     "extra": {"rounds": paired, "per_round": [round(r, 2) for r in ratios], **spread(ratios),
                               "definition": f"reference {metric} / cli {metric}, same round"}})
        per_round = ", ".join(f"{r:.2f}" for r in ratios)
        md += (f"\nSpeed-up per iteration ({'wall' if measure == 'seconds' else 'CPU'} time), CLI defaults vs "
               f"reference loop: **{statistics.median(ratios):.2f}x** median over {len(paired)} alternating "
               f"rounds (per round: {per_round}).\n")
    if md:
        md += ("\nOn a machine shared with other jobs the wall-time slopes are dominated by their load (one can come "
               "out negative); the CPU time of one-thread processes is the measurement to read there.\n")
    warm = [r for r in records if r.get("key") == "cli-warmup"]
    cli_runs = [r for r in timing if r["impl"] == "cli" and r["iterations"] == (warm[0]["iterations"] if warm else -1)]
    if warm and cli_runs:
        extra_cpu = warm[0]["cpu_seconds"] - statistics.median(r["cpu_seconds"] for r in cli_runs)
        extra_wall = warm[0]["seconds"] - statistics.median(r["seconds"] for r in cli_runs)
        rows.append({"dataset": "fashion-mnist", "method": "dm", "ipc": 10, "model": "convnet3",
                     "metric": "cold_compile_extra_seconds", "mean": round(extra_wall, 1), "std": None, "n": 1,
                     "iterations": warm[0]["iterations"], "epochs": 0,
                     "extra": {"cpu_seconds": round(extra_cpu, 1), "warmup": {k: warm[0][k] for k in
                                                                             ("seconds", "cpu_seconds")},
                               "definition": "first CLI run (empty compile cache) minus a warm run of the same "
                                             "length; paid once per machine and code version"}})
        md += (f"\nFirst run with an empty compile cache: {extra_cpu:.0f} CPU-seconds ({extra_wall:.0f} s wall here) "
               "more start-up than a warm run; later runs reuse the cache.\n")
    md = markdown_table(table, ["side", "measure", "s / iteration, median (min-max)", "start-up s, median (min-max)",
                                "runs (iterations)", "settings"]) + md
    demos: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if str(record.get("key", "")).startswith("demo-"):
            demos.setdefault(record["summary"]["dataset"], []).append(record)
    for dataset, runs in demos.items():
        seconds, summary = [r["seconds"] for r in runs], runs[-1]["summary"]
        cpu = [r["cpu_seconds"] for r in runs]
        rows.append({"dataset": dataset, "method": "demo", "ipc": summary["ipc"], "model": "convnet3",
                     "metric": "wall_seconds", "mean": round(statistics.median(seconds), 1),
                     "std": round(statistics.pstdev(seconds), 1), "n": len(seconds),
                     "iterations": summary["iterations"], "epochs": summary["evaluation"]["epochs"],
                     "extra": {"per_run": [round(s, 1) for s in seconds], "cpu_seconds": [round(c, 1) for c in cpu],
                               "phases_seconds": [r["summary"]["seconds"] for r in runs],
                               "command": " ".join(["distillset demo --out DIR", *runs[-1].get("demo_args", [])]),
                               "load_average": [r["load_average"] for r in runs], "nice": [r["nice"] for r in runs],
                               "runtime": summary["runtime"],
                               "accuracy": {k: [round(r["summary"][k]["mean"], 2) for r in runs]
                                            for k in ("dm", "random")}}})
        md += (f"\n`distillset demo` on {dataset} (IPC {summary['ipc']}; what `make demo` runs after set-up): "
               f"wall {', '.join(f'{s:.0f}' for s in seconds)} s, CPU {', '.join(f'{c:.0f}' for c in cpu)} s "
               f"(all threads); DM {summary['dm']['mean']:.1f} vs random {summary['random']['mean']:.1f} %.\n")
    loads = [r["load_average"][0] for r in records if "load_average" in r]
    if loads:
        md += (f"\nShared 2-core machine: 1-minute load average {min(loads):.1f}-{max(loads):.1f} during the runs "
               "(other jobs ran at the same time; alternating rounds spread their effect over both sides, and CPU "
               "time is nearly independent of it).\n")
    return rows, md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default=NAME, help="result and cells name (e.g. a rerun on another machine state)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cli-iterations", type=int, nargs=2, default=[5, 45], metavar=("N1", "N2"))
    parser.add_argument("--reference-iterations", type=int, nargs=2, default=[2, 12], metavar=("N1", "N2"))
    parser.add_argument("--demo", action="store_true", help="time `distillset demo` instead (one more cell)")
    parser.add_argument("--demo-args", nargs=argparse.REMAINDER, default=[],
                        help="options for `distillset demo` (e.g. --data-root /nonexistent for the digits fallback)")
    parser.add_argument("--report-only", action="store_true", help="rebuild the result files from the cells")
    parser.add_argument("--reference-run", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_run is not None:
        reference_run(args.reference_run)
        return
    cells = Cells(args.name)
    started = time.perf_counter()
    if args.demo:
        run_demo(cells, len([r for r in cells.all() if str(r.get("key", "")).startswith("demo-")]), args.demo_args)
    elif not args.report_only:
        iterations = {"cli": args.cli_iterations, "reference": args.reference_iterations}
        run_cell(cells, "cli", iterations["cli"][0], None)
        for round_index in range(args.rounds):
            order = ("cli", "reference") if round_index % 2 == 0 else ("reference", "cli")
            for position in range(2):  # N1 of both sides, then N2 of both sides
                for impl in order:
                    run_cell(cells, impl, iterations[impl][position], round_index)
    records = cells.all()
    rows, md = build_rows(records)
    recorded = RESULTS / f"{args.name}.json"  # a rewrite keeps the command that ran the timing rounds
    command = json.loads(recorded.read_text())["command"] if recorded.is_file() else TIMING_COMMAND
    if not (args.report_only or args.demo) or "--report-only" in command:
        command = command_line() if not (args.report_only or args.demo) else TIMING_COMMAND
    write_results(args.name, command, rows, [],
                  sum(r["seconds"] for r in records) or time.perf_counter() - started, md)
    print(md)


if __name__ == "__main__":
    main()
