"""Cross-architecture accuracy of a DM set, with and without ELF (docs/evaluation.md).

    python benchmarks/cross_arch_elf.py --epochs 1000
    python benchmarks/cross_arch_elf.py --set benchmarks/artifacts/dm_fashion_mnist/<cell> --epochs 300
    python benchmarks/cross_arch_elf.py --set ... --elf-variants "" feature_loss=l2 lambda_front=0.1

Rows: ConvNet-3 (the distillation architecture), ResNet-18 and ResNetAP-10 trained on the same set, the
latter two also with ELF (once per ``--elf-variants`` entry: "" is the reference's settings, otherwise
comma-separated ELFConfig overrides); each mean ± std over ``--models`` networks, final-epoch accuracy. Model ``m``
of an architecture starts from the same weights and sees the same batches with and without ELF.
Resumable per trained model (benchmarks/cells/<name>/models/); the set is distilled once (or given with
``--set``) and kept under benchmarks/artifacts/<name>/; the ELF feature network is trained once and
cached under ~/.cache/distillset/feature-nets/.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path
from typing import Any

import torch

from common import ROOT, Cells, command_line, markdown_table, mean_std, write_results
from distill_table import build
from distillset.artifacts import load_run, save_run
from distillset.data import load_dataset
from distillset.data.base import DatasetSplits, ImageSet
from distillset.evaluate import EvalConfig, evaluate_synthetic
from distillset.evaluate.elf import ELFConfig, elf_feature_network, evaluate_elf
from distillset.registry import parse_key_values
from table import ARTIFACTS, WORK, Cell


def synthetic_set(args: argparse.Namespace, splits: DatasetSplits) -> tuple[ImageSet, dict[str, Any], str]:
    """The evaluated set, its manifest and a short key naming it (from ``--set`` or distilled here)."""
    if args.set is not None:
        synthetic, manifest = load_run(args.set)
        return synthetic, manifest, f"set-{manifest['tensors']['sha256'][:12]}"
    cell = Cell(args.dataset, "dm", args.ipc, iterations=args.iterations)
    artifact = ARTIFACTS / args.name / cell.key
    if not (artifact / "manifest.json").is_file():
        start = time.perf_counter()
        synthetic, config = build(cell, splits, WORK / args.name / cell.key)
        save_run(artifact, synthetic, method="dm", dataset=args.dataset, ipc=args.ipc, seed=0, config=config,
                 wall_seconds=time.perf_counter() - start, extra={"cell": cell.key})
    synthetic, manifest = load_run(artifact)
    return synthetic, manifest, cell.key


def row_label(arch: str, variant: str | None) -> str:
    """``resnet18``, ``resnet18 + ELF`` or ``resnet18 + ELF (feature_loss=l2)``."""
    return arch + ("" if variant is None else " + ELF") + (f" ({variant})" if variant else "")


def elf_tag(elf: ELFConfig, variant: str) -> str:
    """The ELF part of a model's cell key (the reference settings keep the original, shorter key)."""
    tag = f"elf-w{elf.feature_width}-fe{elf.feature_epochs}-fn{elf.feature_train_size or 'all'}"
    return tag + ("-" + re.sub(r"[^A-Za-z0-9.]+", "-", variant) if variant else "")


def parse_variant(variant: str) -> dict[str, Any]:
    """``"feature_loss=l2,lambda_front=0.1"`` -> ELFConfig overrides (values parsed as JSON where possible)."""
    try:
        return parse_key_values(filter(None, variant.split(",")))
    except ValueError as exc:
        raise SystemExit(f"--elf-variants entries are key=value[,key=value]: {exc}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="cross_arch_elf", help="result / cell folder name")
    parser.add_argument("--set", type=Path, help="run directory of the set to evaluate (default: distil DM here)")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=2000, help="DM iterations when the set is distilled here")
    parser.add_argument("--archs", nargs="+", default=["convnet3", "resnet18", "resnetap10"])
    parser.add_argument("--elf-archs", nargs="*", default=["resnet18", "resnetap10"])
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1000, help="evaluation epochs (protocol: 1000)")
    parser.add_argument("--feature-width", type=int, default=512)
    parser.add_argument("--feature-epochs", type=int, default=2)
    parser.add_argument("--feature-train-size", type=int, default=10000,
                        help="class-balanced real images for the feature network (0 = whole train split)")
    parser.add_argument("--elf-variants", nargs="+", default=[""],
                        help='ELF rows per entry: "" = reference settings, or overrides such as feature_loss=l2')
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", help="evaluation training precision (fp32 or bf16)")
    parser.add_argument("--eval-compile", action="store_true", help="torch.compile the evaluated networks")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    splits = load_dataset(args.dataset)
    synthetic, manifest, set_key = synthetic_set(args, splits)
    base = {"feature_width": args.feature_width, "feature_epochs": args.feature_epochs,
            "feature_train_size": args.feature_train_size or None}
    elf_configs = {variant: ELFConfig(**{**base, **parse_variant(variant)}) for variant in args.elf_variants}
    models = Cells(f"{args.name}/models")
    settings = [(arch, None) for arch in args.archs] + [
        (arch, variant) for variant in args.elf_variants for arch in args.elf_archs
    ]
    speed_tag = ("" if args.precision == "fp32" else f"-{args.precision}") + ("-compiled" if args.eval_compile else "")
    feature_nets: dict[str, Any] = {}  # per variant, loaded (or trained) when its first model runs
    rows, table = [], []
    for arch, variant in settings:
        elf = elf_configs[variant] if variant is not None else None
        evaluation_tag = "plain" if elf is None else elf_tag(elf, variant)
        records = []
        for index in range(args.models):
            key = f"{set_key}-{arch}-{evaluation_tag}-e{args.epochs}{speed_tag}-m{index}"
            record = models.get(key)
            if record is None:
                config = EvalConfig(model=arch, epochs=args.epochs, num_models=1, seed=index, precision=args.precision,
                                    compile=args.eval_compile)
                if elf is not None:
                    if variant not in feature_nets:
                        feature_nets[variant] = elf_feature_network(splits, elf, device=args.device, progress=True)
                    result = evaluate_elf(synthetic, splits, config, elf, device=args.device,
                                          feature_net=feature_nets[variant])
                else:
                    result = evaluate_synthetic(synthetic, splits.test, splits.info, config, device=args.device)
                record = {"accuracy": result.mean, "per_class": result.per_class,
                          "train_seconds": result.models[0].train_seconds, "config": result.config}
                models.put(key, record)
                print(f"[{args.name}] {key}: {record['accuracy']:.2f}% ({record['train_seconds']:.0f} s)", flush=True)
            records.append(record)
        accuracies = [r["accuracy"] for r in records]
        mean, std = mean_std(accuracies)
        extra: dict[str, Any] = {
            "elf": elf is not None, "set": os.path.relpath(args.set or ARTIFACTS / args.name / set_key, ROOT.parent),
            "set_key": set_key,
            "set_sha256": manifest["tensors"]["sha256"], "accuracies": [round(a, 2) for a in accuracies],
            "per_class": [round(a, 2) for a in torch.tensor([r["per_class"] for r in records]).mean(0).tolist()],
            "accuracy_reported": "final_epoch", "train_seconds": round(sum(r["train_seconds"] for r in records), 1),
            "eval_precision": args.precision, "eval_compile": args.eval_compile,
        }
        if elf is not None:
            extra["elf_config"] = records[0]["config"]["elf"]
            if variant:
                extra["elf_variant"] = variant
        rows.append({"dataset": manifest["dataset"], "method": manifest["method"], "ipc": manifest["ipc"],
                     "model": arch, "metric": "test_accuracy", "mean": round(mean, 2), "std": round(std, 2),
                     "n": len(records), "iterations": manifest["config"].get("iterations", 0), "epochs": args.epochs,
                     "extra": extra})
        table.append({"model": row_label(arch, variant), "epochs": args.epochs,
                      "accuracy": f"{mean:.1f} ± {std:.1f}", "n": len(records)})
        md = (f"Set: {manifest['method']} {manifest['dataset']} IPC {manifest['ipc']} ({set_key}). "
              f"Final-epoch test accuracy after {args.epochs} evaluation epochs"
              + (" (protocol: 1000; fewer here for CPU time)" if args.epochs < 1000 else "")
              + f", {args.precision}{' + torch.compile' if args.eval_compile else ''}"
              + f". ELF feature network: ConvNet-3 width {args.feature_width}, {args.feature_epochs} epochs on "
              f"{args.feature_train_size or 'all'} real images.\n\n"
              + markdown_table(table, ["model", "epochs", "accuracy", "n"]))
        pending = [row_label(arch, v) for arch, v in settings[len(rows):]]
        if pending:
            md += f"\n\nPartial; to run: {', '.join(pending)} (rerun the command; finished models are kept).\n"
        seconds = sum(r["extra"]["train_seconds"] for r in rows)
        # rewritten after every architecture, so a long run that stops keeps its finished rows
        write_results(args.name, command_line(), rows, [], max(seconds, time.perf_counter() - start), md)


if __name__ == "__main__":
    main()
