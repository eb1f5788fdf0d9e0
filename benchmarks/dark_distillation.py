"""Dark Distillation on published Fashion-MNIST DM sets: clean test accuracy (CTA) and attack success rate (ASR)
of models trained on the set before and after the attack, and the attack's wall time.

    python benchmarks/dark_distillation.py --ipc 10 50 --triggers patch blended

Resumable: each poisoned set is a run folder under benchmarks/work/security/ and each trained model a cell under
benchmarks/cells/dark_distillation/; a rerun skips both. The scale (attacker network width, trajectory points,
image updates, victim epochs, models, test subset) is recorded in every row's ``extra`` (docs/security.md).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from common import RESULTS, ROOT, Cells, command_line, markdown_table, mean_std, write_results
from distillset.artifacts import load_run, save_run
from distillset.data import load_dataset
from distillset.data.base import DatasetInfo, ImageSet
from distillset.nets import get_network
from distillset.security.dark_distillation import DarkDistillationConfig, attack_success_rate, dark_distillation
from distillset.security.triggers import Trigger, TriggerSpec
from distillset.training import EvalConfig, test_accuracy, train_classifier

SETS = ROOT / "artifacts" / "dm_fashion_mnist"
WORK = ROOT / "work" / "security"
# victim training set-ups: (name, architecture, width, DSA augmentation)
SETUPS = {"convnet3-w32": ("convnet3", 32, False), "convnet3-w32-dsa": ("convnet3", 32, True),
          "mlp": ("mlp", None, False)}


def source_run(ipc: int) -> Path:
    return SETS / f"fashion-mnist-dm-ipc{ipc}-it2000-s0"


def attack_config(args: argparse.Namespace, trigger: str, target: int, seed: int) -> DarkDistillationConfig:
    return DarkDistillationConfig(target=target, width=args.width, trajectory_points=args.trajectory_points,
                                  match_steps=args.match_steps, seed=seed,
                                  trigger=TriggerSpec(kind=trigger, size=args.trigger_size, pattern_seed=seed))


def poisoned_run(source: Path, info: DatasetInfo, config: DarkDistillationConfig, name: str) -> Path:
    """The attacked copy of ``source`` (made once; its wall_seconds is the attack's time)."""
    out = WORK / name
    if (out / "manifest.json").is_file():
        return out
    synthetic, manifest = load_run(source)
    result = dark_distillation(synthetic, info, config, progress=True)
    save_run(out, result.poisoned, method=manifest["method"], dataset=manifest["dataset"], ipc=manifest["ipc"],
             seed=manifest["seed"], config=manifest["config"], wall_seconds=result.seconds,
             extra={"kind": "poisoned", "attack": {"name": "dark-distillation", **config.to_dict()},
                    "source": {"run": str(source.relative_to(ROOT.parent)), "sha256": manifest["tensors"]["sha256"]},
                    "losses": result.losses})
    return out


def train_victim(train: ImageSet, test: ImageSet, info: DatasetInfo, setup: str, epochs: int, seed: int,
                 triggers: dict[str, Trigger], target: int) -> dict[str, Any]:
    arch, width, dsa = SETUPS[setup]
    options = {"width": width} if width is not None else {}
    config = EvalConfig(model=arch, epochs=epochs, dsa=dsa, compile=False, precision="fp32", seed=seed)
    net = get_network(arch, info.channels, info.num_classes, info.image_size, seed=seed, **options)
    device = torch.device("cpu")
    start = time.perf_counter()
    train_classifier(net, train, config, generator=torch.Generator().manual_seed(seed), device=device)
    cta, _ = test_accuracy(net, test, info.num_classes, device=device, config=config)
    asr = {name: attack_success_rate(net, test, trigger, target, device=device) for name, trigger in triggers.items()}
    return {"cta": cta, "asr": asr, "train_seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ipc", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--triggers", nargs="+", default=["patch", "blended"])
    parser.add_argument("--target", type=int, default=0)
    parser.add_argument("--setups", nargs="+", default=list(SETUPS))
    parser.add_argument("--epochs", type=int, default=100, help="victim training epochs")
    parser.add_argument("--models", type=int, default=2, help="victims per set and set-up")
    parser.add_argument("--width", type=int, default=32, help="attacker ConvNet width (paper: 128)")
    parser.add_argument("--trajectory-points", type=int, default=3, help="paper: 10")
    parser.add_argument("--match-steps", type=int, default=25, help="paper: 101")
    parser.add_argument("--trigger-size", type=int, default=3, help="patch side (paper code: 1)")
    parser.add_argument("--test-stride", type=int, default=5, help="every k-th test image (1: all 10000)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    splits = load_dataset("fashion-mnist")
    info = splits.info
    test = splits.test.subset(torch.arange(0, len(splits.test), args.test_stride))
    cells = Cells("dark_distillation")
    scale = {"command": command_line(), "attack_width": args.width, "trajectory_points": args.trajectory_points,
             "match_steps": args.match_steps, "trigger_size": args.trigger_size, "victim_epochs": args.epochs,
             "test_images": len(test), "asr_over": "non-target test images"}
    rows: list[dict[str, Any]] = []
    for ipc in args.ipc:
        source = source_run(ipc)
        sets = {"clean": source}
        configs = {}
        for trigger in args.triggers:
            config = attack_config(args, trigger, args.target, seed=0)
            configs[trigger] = config
            name = (f"{source.name}-dark-{trigger}-t{args.target}-w{args.width}-p{args.trajectory_points}"
                    f"-m{args.match_steps}-s{args.trigger_size}")
            if args.report_only and not (WORK / name / "manifest.json").is_file():
                continue
            sets[trigger] = poisoned_run(source, info, config, name)
            attack_manifest = load_run(sets[trigger])[1]
            rows.append({"dataset": "fashion-mnist", "method": f"dm+dark-{trigger}", "ipc": ipc, "model": "convnet3",
                         "metric": "attack_seconds", "mean": attack_manifest["wall_seconds"], "std": 0.0, "n": 1,
                         "iterations": args.trajectory_points + 1, "epochs": 0,
                         "extra": {**scale, "trigger": config.trigger.to_dict(), "target": args.target,
                                   "threads": 1}})
        triggers = {name: config.trigger.build(info) for name, config in configs.items()}
        for set_name, run in sets.items():
            synthetic = load_run(run)[0]
            for setup in args.setups:
                results = []
                for model in range(args.models):
                    key = f"ipc{ipc}-{run.name}-{setup}-e{args.epochs}-stride{args.test_stride}-m{model}"
                    cell = cells.get(key)
                    if cell is None and not args.report_only:
                        cell = train_victim(synthetic, test, info, setup, args.epochs, model, triggers, args.target)
                        cells.put(key, cell)
                        print(key, cell, flush=True)
                    if cell is not None:
                        results.append(cell)
                if not results:
                    continue
                method = "dm" if set_name == "clean" else f"dm+dark-{set_name}"
                base = {"dataset": "fashion-mnist", "method": method, "ipc": ipc, "model": setup,
                        "n": len(results), "iterations": 0, "epochs": args.epochs}
                mean, std = mean_std(r["cta"] for r in results)
                where = os.path.relpath(run, ROOT.parent)  # the repository-relative location of the set
                rows.append({**base, "metric": "cta", "mean": round(mean, 2), "std": round(std, 2),
                             "extra": {**scale, "accuracies": [r["cta"] for r in results], "set": where}})
                for trigger in ([set_name] if set_name != "clean" else list(triggers)):
                    mean, std = mean_std(r["asr"][trigger] for r in results)
                    rows.append({**base, "metric": "asr", "mean": round(mean, 2), "std": round(std, 2),
                                 "extra": {**scale, "trigger": trigger, "target": args.target,
                                           "values": [r["asr"][trigger] for r in results], "set": where}})
    previous = RESULTS / "dark_distillation.json"
    if previous.is_file():  # rows of other IPCs come from other commands (their own scale): keep them
        rows = [r for r in json.loads(previous.read_text())["rows"] if r["ipc"] not in args.ipc] + rows
        rows.sort(key=lambda r: r["ipc"])
    table = [{"IPC": r["ipc"], "set": r["method"], "victim": r["model"], "metric": r["metric"],
              "trigger": r["extra"].get("trigger", "") if isinstance(r["extra"].get("trigger", ""), str)
              else r["extra"]["trigger"]["kind"],
              "value": f"{r['mean']:.1f} ± {r['std']:.1f} (n={r['n']})"} for r in rows]
    scales = sorted({(r["ipc"], r["extra"]["attack_width"], r["extra"]["trajectory_points"], r["extra"]["match_steps"],
                      r["extra"]["trigger_size"], r["extra"]["victim_epochs"], r["extra"]["test_images"])
                     for r in rows})
    note = "\nScale (CPU, shared cores, one thread; paper code: width 128, points 0...10, 101 updates):\n\n" + (
        "".join(f"- IPC {ipc}: attacker ConvNet-3 width {w}, trajectory points 0...{p}, {m} image updates per point, "
                f"patch {t}x{t}; victims {e} epochs; CTA/ASR on {n} test images (ASR: non-target ones)\n"
                for ipc, w, p, m, t, e, n in scales))
    write_results("dark_distillation", command_line(), rows, [], time.perf_counter() - started,
                  markdown_table(table, ["IPC", "set", "victim", "metric", "trigger", "value"]) + note)


if __name__ == "__main__":
    main()
