"""Seconds per DM iteration: our engine vs a reference-style step, same settings.

    python benchmarks/dm_speed.py --dataset fashion-mnist --ipc 10 --batch-real 256 --iterations 10

Settings shared by both: ConvNet-3 width 128 (instance norm), a fresh randomly initialised network each
iteration, DSA `color_crop_cutout_flip_scale_rotate` with one siamese draw per class, batch_real real images per
class, IPC synthetic images per class, loss summed over classes, one SGD step (lr 1.0, momentum 0.5).

* ``reference``: the structure of VICO-UoE/DatasetCondensation ``main_DM.py``: a per-class loop with one
  forward pass for the real batch and one for the synthetic images of each class, fp32, eager, real features
  computed with autograd enabled and then detached (as the reference does).
* ``engine``: ``distillset.engine.Distiller.step`` with the given options (all classes in one no-grad real
  pass, optional bf16 real pass, optional torch.compile with in-place re-initialisation).

Prints one JSON line per implementation with ``sec_per_iter_median``; ``--record`` also writes
benchmarks/results/dm_speed.json. ``--rounds R`` alternates the implementations R times (after one warm-up
each), so a slow phase of a shared machine hits both alike, and reports the speed-up of every round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import markdown_table, write_results  # noqa: E402  (also applies distillset.runtime settings)
from distillset.augment import DSA  # noqa: E402
from distillset.data import ImageSet, load_dataset  # noqa: E402
from distillset.engine import Distiller, config_for_method  # noqa: E402
from distillset.nets import get_network  # noqa: E402

REFERENCE_CPU_SECONDS = 2.9  # main_DM.py timed by hand on this machine type
REFERENCE_H100_SECONDS = 0.051


def reference_style_step(real, info, synthetic, optimizer, ipc, batch_real, generator, dsa, iteration):
    net = get_network("convnet3", info.channels, info.num_classes, info.image_size, seed=iteration).to(synthetic.device)
    net.train()
    for p in net.parameters():
        p.requires_grad_(False)
    loss = torch.zeros(())
    for c in range(info.num_classes):
        members = real.class_indices(c)
        img_real = real.images[members[torch.randperm(len(members), generator=generator)[:batch_real]]]
        img_syn = synthetic[c * ipc : (c + 1) * ipc]
        params = dsa.sample(1, generator, siamese=True)
        img_real, img_syn = dsa.apply(img_real, params), dsa.apply(img_syn, params)
        output_real = net.embed(img_real).detach()
        output_syn = net.embed(img_syn)
        loss = loss + ((output_real.mean(0) - output_syn.mean(0)) ** 2).sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def time_steps(step, iterations: int, warmup: int) -> list[float]:
    for i in range(warmup):
        step(i)
    times = []
    for i in range(warmup, warmup + iterations):
        start = time.perf_counter()
        step(i)
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # a GPU step is done when its kernels are
        times.append(time.perf_counter() - start)
    return times


def step_arguments(description: str) -> argparse.ArgumentParser:
    """The step-timing settings shared by dm_speed.py and shared_real_speed.py."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--batch-real", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--real-precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the embedding network")
    parser.add_argument("--device", default="cpu")
    return parser


def make_step(impl: str, args: argparse.Namespace, real, info) -> tuple[Callable[[int], None], dict[str, Any]]:
    """One implementation's step function (state kept between calls) and its settings."""
    generator = torch.Generator().manual_seed(0)
    if impl == "reference":
        real = ImageSet(real.images.to(args.device), real.labels)
        synthetic = real.images[: info.num_classes * args.ipc].clone().requires_grad_(True)
        optimizer = torch.optim.SGD([synthetic], lr=1.0, momentum=0.5)
        dsa = DSA("color_crop_cutout_flip_scale_rotate")
        return (lambda i: reference_style_step(real, info, synthetic, optimizer, args.ipc, args.batch_real,
                                               generator, dsa, i)), {"precision": "fp32", "compile": False}
    steps = args.warmup + args.rounds * args.iterations
    config = config_for_method("dm", ipc=args.ipc, iterations=steps, batch_real=args.batch_real,
                               real_precision=args.real_precision, compile=args.compile)
    distiller = Distiller(real, info, config, device=args.device)
    return (lambda i: distiller.step()), {"real_precision": args.real_precision, "compile": args.compile}


def main() -> None:
    parser = step_arguments(__doc__)
    parser.add_argument("--impl", nargs="+", default=["reference", "engine"], choices=["reference", "engine"])
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate the implementations this many times (--iterations steps each), so slow "
                             "phases of a shared machine hit both alike; the speed-up is also given per round")
    parser.add_argument("--record", action="store_true", help="write benchmarks/results/dm_speed.json")
    args = parser.parse_args()
    started = time.perf_counter()
    splits = load_dataset(args.dataset)
    info, real = splits.info, splits.train
    steps = {impl: make_step(impl, args, real, info) for impl in args.impl}
    times: dict[str, list[list[float]]] = {impl: [] for impl in args.impl}
    for step, _ in steps.values():
        time_steps(step, 0, args.warmup)
    for round_index in range(args.rounds):
        for impl, (step, _) in steps.items():
            first = args.warmup + round_index * args.iterations
            times[impl].append(time_steps(lambda i, step=step, first=first: step(first + i), args.iterations, 0))
    rows = []
    for impl, (_, settings) in steps.items():
        every = [t for round_times in times[impl] for t in round_times]
        line = {"impl": impl, "sec_per_iter_median": round(statistics.median(every), 4),
                "sec_per_iter_std": round(statistics.pstdev(every), 4), "iterations": args.iterations * args.rounds,
                "rounds": args.rounds, "round_medians": [round(statistics.median(r), 4) for r in times[impl]],
                "dataset": args.dataset, "ipc": args.ipc, "batch_real": args.batch_real,
                "threads": torch.get_num_threads(), **settings}
        print(json.dumps(line), flush=True)
        rows.append(line)
    if len(rows) == 2:
        ratios = [round(ref / eng, 2) for ref, eng in zip(rows[0]["round_medians"], rows[1]["round_medians"])]
        rows[1]["speedup_per_round"] = ratios
        print(json.dumps({"speedup_median": round(rows[0]["sec_per_iter_median"] / rows[1]["sec_per_iter_median"], 2),
                          "speedup_per_round": ratios}), flush=True)
    if args.record:
        result_rows = [{"dataset": r["dataset"], "method": "dm", "ipc": r["ipc"], "model": "convnet3",
                        "metric": "sec_per_iter", "mean": r["sec_per_iter_median"], "std": r["sec_per_iter_std"],
                        "n": r["iterations"],
                        "iterations": r["iterations"], "epochs": 0,
                        "extra": {k: v for k, v in r.items() if k not in ("dataset", "ipc", "iterations")}}
                       for r in rows]
        paper = [{"dataset": args.dataset, "method": "dm", "ipc": args.ipc, "metric": "sec_per_iter",
                  "mean": REFERENCE_CPU_SECONDS,
                  "source": "reference main_DM.py step on this 2-core CPU type, timed by hand"},
                 {"dataset": args.dataset, "method": "dm", "ipc": args.ipc, "metric": "sec_per_iter",
                  "mean": REFERENCE_H100_SECONDS,
                  "source": "reference main_DM.py step on an H100, timed by hand"}]
        md = markdown_table([{"impl": r["impl"], "s/iter (median)": r["sec_per_iter_median"],
                              "round medians": ", ".join(map(str, r["round_medians"])),
                              "speed-up per round": ", ".join(map(str, r.get("speedup_per_round", []))),
                              "settings": json.dumps({k: r[k] for k in r if k in ("precision", "real_precision",
                                                                                   "compile", "threads")})}
                             for r in rows], ["impl", "s/iter (median)", "round medians", "speed-up per round",
                                              "settings"])
        write_results("dm_speed", " ".join(["python", "benchmarks/dm_speed.py", *sys.argv[1:]]), result_rows, paper,
                      time.perf_counter() - started, md)


if __name__ == "__main__":
    main()
