"""Backdoor scan (distillset.security.scan) on clean and Dark-Distillation-poisoned Fashion-MNIST sets:
detection rate and false-alarm rate.

    python benchmarks/backdoor_scan.py

The threshold is calibrated on the clean coreset and CFM sets of benchmarks/artifacts (1.25 x their largest
score) and the rates are reported on the other clean sets and on poisoned sets made from those, with different
methods, IPCs, targets and triggers. Poisoned sets are cached under benchmarks/work/security/ (resumable).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from common import ROOT, command_line, markdown_table, write_results
from dark_distillation import poisoned_run
from distillset.artifacts import load_run
from distillset.data import dataset_info
from distillset.security.dark_distillation import DarkDistillationConfig
from distillset.security.scan import CALIBRATED_THRESHOLDS, scan_set
from distillset.security.triggers import TriggerSpec

ART = ROOT / "artifacts"
CALIBRATION_GROUPS = ("coreset_fashion_mnist", "cfm_fashion_mnist")
REPORTED_GROUPS = ("dm_fashion_mnist", "csdm_longtail", "prune_fashion_mnist")
MARGIN = 1.25
# (source set, target, trigger, trajectory points, image updates per point); the first two are the attacks of
# benchmarks/dark_distillation.py, the others lighter (two trajectory points) to fit the CPU budget.
POISONED = [
    ("dm_fashion_mnist/fashion-mnist-dm-ipc10-it2000-s0", 0, "patch", 3, 25),
    ("dm_fashion_mnist/fashion-mnist-dm-ipc10-it2000-s0", 0, "blended", 3, 25),
    ("dm_fashion_mnist/fashion-mnist-hdd-ipc10-it2000-s0", 1, "patch", 1, 25),
    ("csdm_longtail/fashion-mnist-csdm-ipc10-it2000-s0", 2, "blended", 1, 25),
    ("csdm_longtail/fashion-mnist-lt-dm-ipc10-it2000-s0-imbalance0.01", 3, "patch", 1, 25),
    ("csdm_longtail/fashion-mnist-lt-csdm-ipc10-it2000-s0-imbalance0.1", 4, "blended", 1, 25),
    ("prune_fashion_mnist/fashion-mnist-dm-ipc10-it2000-s0-keep0.2-prunerandom", 5, "patch", 1, 25),
    ("prune_fashion_mnist/fashion-mnist-hdd-ipc10-it2000-s0-keep0.2-prunehyperbolic", 6, "blended", 1, 25),
    ("dm_fashion_mnist/fashion-mnist-dm-ipc1-it2000-s0", 7, "patch", 3, 25),
    ("dm_fashion_mnist/fashion-mnist-hdd-ipc1-it2000-s0", 8, "blended", 3, 25),
]


def runs(groups: tuple[str, ...]) -> list[Path]:
    return sorted(p.parent for g in groups for p in (ART / g).glob("*/manifest.json"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=32, help="attacker ConvNet width (paper: 128)")
    parser.add_argument("--trigger-size", type=int, default=3)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    info = dataset_info("fashion-mnist")
    calibration = {str(r.relative_to(ROOT.parent)): scan_set(load_run(r)[0], 0.0).score
                   for r in runs(CALIBRATION_GROUPS)}
    threshold = round(MARGIN * max(calibration.values()), 2)
    library = CALIBRATED_THRESHOLDS["fashion-mnist"]
    clean = {str(r.relative_to(ROOT.parent)): scan_set(load_run(r)[0], library) for r in runs(REPORTED_GROUPS)}
    poisoned = {}
    for source, target, trigger, points, steps in POISONED:
        config = DarkDistillationConfig(target=target, width=args.width, trajectory_points=points, match_steps=steps,
                                        trigger=TriggerSpec(kind=trigger, size=args.trigger_size))
        name = (f"{Path(source).name}-dark-{trigger}-t{target}-w{args.width}-p{points}-m{steps}"
                f"-s{args.trigger_size}")
        if args.report_only and not (ROOT / "work" / "security" / name / "manifest.json").is_file():
            continue
        run = poisoned_run(ART / source, info, config, name)
        poisoned[name] = (scan_set(load_run(run)[0], library), load_run(run)[1]["wall_seconds"], source)
        print(name, poisoned[name][0].score, flush=True)
    detected = [r.flagged for r, _, _ in poisoned.values()]
    alarms = [r.flagged for r in clean.values()]
    scale = {"threshold": library, "threshold_rule": f"{MARGIN} x largest score of the calibration sets",
             "threshold_from_calibration": threshold, "calibration_sets": calibration,
             "attack_width": args.width, "trigger_size": args.trigger_size}
    base = {"dataset": "fashion-mnist", "method": "scan-hf", "ipc": 0, "model": "none", "std": 0.0,
            "iterations": 0, "epochs": 0}
    rows = [
        {**base, "metric": "detection_rate", "mean": round(100.0 * sum(detected) / max(len(detected), 1), 1),
         "n": len(detected), "extra": {**scale, "sets": {k: {"score": round(r.score, 3), "flagged": r.flagged,
                                                             "attack_seconds": s, "source": src}
                                                         for k, (r, s, src) in poisoned.items()}}},
        {**base, "metric": "false_alarm_rate", "mean": round(100.0 * sum(alarms) / max(len(alarms), 1), 1),
         "n": len(alarms), "extra": {**scale, "sets": {k: {"score": round(r.score, 3), "flagged": r.flagged}
                                                       for k, r in clean.items()}}},
    ]
    table = ([{"set": k, "kind": "calibration (clean)", "score": f"{v:.2f}", "flagged": ""}
              for k, v in calibration.items()]
             + [{"set": k, "kind": "clean", "score": f"{r.score:.2f}", "flagged": r.flagged} for k, r in clean.items()]
             + [{"set": k, "kind": "poisoned", "score": f"{r.score:.2f}", "flagged": r.flagged}
                for k, (r, _, _) in poisoned.items()])
    summary = (f"Threshold {library} (rule: {MARGIN} x the largest calibration score = {threshold}). "
               f"Detection rate {rows[0]['mean']}% over {len(detected)} poisoned sets; false-alarm rate "
               f"{rows[1]['mean']}% over {len(alarms)} clean sets (calibration sets not counted).\n\n")
    write_results("backdoor_scan", command_line(), rows, [], time.perf_counter() - started,
                  summary + markdown_table(table, ["set", "kind", "score", "flagged"]))


if __name__ == "__main__":
    main()
