"""Wall time of one full evaluation (1000 epochs + testing on the 10k test split) of a 100-image
Fashion-MNIST set (random real IPC 10) with ConvNet-3, per precision setting, and the accuracy it gives.

    python benchmarks/eval_speed.py --settings fp32 bf16 --models 3

``fp32`` (contiguous, eager, native group-norm kernel) is the configuration of the reference
``evaluate_synset``; ``bf16`` is bf16 autocast for forward/backward (fp32 weights, fp32 norm statistics);
``fast`` is bf16 autocast plus ``torch.compile`` of the network (compilation time included).
Resumable per (setting, model).
"""

from __future__ import annotations

import argparse
import time

from common import Cells, command_line, markdown_table, mean_std, write_results
from distillset.coreset import select_coreset
from distillset.data import load_dataset
from distillset.evaluate import EvalConfig, evaluate_synthetic

NAME = "eval_speed"
SETTINGS = {"fp32": {"precision": "fp32"}, "bf16": {"precision": "bf16"},
            "fast": {"precision": "bf16", "compile": True}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--settings", nargs="+", default=["fp32", "fast"], choices=sorted(SETTINGS))
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--ipc", type=int, default=10)
    args = parser.parse_args()
    splits = load_dataset("fashion-mnist")
    subset = select_coreset(splits, "random", args.ipc, seed=0)
    cells = Cells(NAME)
    start = time.perf_counter()
    rows = []
    for setting in args.settings:
        records = []
        for index in range(args.models):
            key = f"{setting}-ipc{args.ipc}-e{args.epochs}-m{index}"
            record = cells.get(key)
            if record is None:
                config = EvalConfig(epochs=args.epochs, num_models=1, seed=index, **SETTINGS[setting])
                t0 = time.perf_counter()
                result = evaluate_synthetic(subset, splits.test, splits.info, config)
                record = {"seconds": time.perf_counter() - t0, "accuracy": result.mean}
                cells.put(key, record)
                print(key, record, flush=True)
            records.append(record)
        seconds = [r["seconds"] for r in records]
        acc_mean, acc_std = mean_std([r["accuracy"] for r in records])
        sec_mean, sec_std = mean_std(seconds)
        extra = {"setting": setting, **SETTINGS[setting], "accuracy_mean": round(acc_mean, 2),
                 "accuracy_std": round(acc_std, 2),
                 "includes": "1000+1 epochs of training with DSA + testing on 10k images"}
        rows.append({"dataset": "fashion-mnist", "method": "random", "ipc": args.ipc, "model": "convnet3",
                     "metric": "seconds_per_evaluation", "mean": round(sec_mean, 1), "std": round(sec_std, 1),
                     "n": len(records), "iterations": 0, "epochs": args.epochs, "extra": extra})
        rows.append({"dataset": "fashion-mnist", "method": "random", "ipc": args.ipc, "model": "convnet3",
                     "metric": "test_accuracy", "mean": round(acc_mean, 2), "std": round(acc_std, 2),
                     "n": len(records), "iterations": 0, "epochs": args.epochs,
                     "extra": {"setting": setting, **SETTINGS[setting]}})
    table = [{"setting": r["extra"]["setting"], "seconds / evaluation": f"{r['mean']} ± {r['std']}",
              "accuracy": f"{r['extra']['accuracy_mean']} ± {r['extra']['accuracy_std']}", "n": r["n"]}
             for r in rows if r["metric"] == "seconds_per_evaluation"]
    md = markdown_table(table, ["setting", "seconds / evaluation", "accuracy", "n"])
    md += ("\nTarget: ≤ 180 s per evaluation on this 2-core CPU. "
           "fp32/contiguous/eager is the reference configuration.\n")
    write_results(NAME, command_line(), rows, [],
                  sum(r["seconds"] for r in cells.all()) or time.perf_counter() - start, md)


if __name__ == "__main__":
    main()
