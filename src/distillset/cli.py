"""Command-line interface: ``distillset distill|coreset|evaluate|inspect|datasets|methods``."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Optional

import torch
import typer

from distillset.artifacts import ArtifactError, atomic_write_json, load_run, save_run
from distillset.registry import UnknownNameError

app = typer.Typer(help="distillset: dataset distillation toolkit.", no_args_is_help=True, add_completion=False)

DataRoot = Annotated[Optional[Path], typer.Option("--data-root", help="Folder holding the dataset files.")]
Device = Annotated[str, typer.Option("--device", help="cpu or cuda.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for reproducible runs.")]
EVALUATION_FILE = "evaluation.json"


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        _fail("--device cuda was asked for but no CUDA GPU is visible to torch; use --device cpu")
    return torch.device(name)


def _parse_params(values: list[str] | None) -> dict[str, Any]:
    """``--param key=value`` pairs; values parsed as JSON where possible (numbers, true/false)."""
    params: dict[str, Any] = {}
    for item in values or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            _fail(f"--param expects key=value, got {item!r}")
        try:
            params[key.replace("-", "_")] = json.loads(raw)
        except json.JSONDecodeError:
            params[key.replace("-", "_")] = raw
    return params


def _load(dataset: str, data_root: Path | None, imbalance: float | None, seed: int):
    from distillset.data import DatasetNotFoundError, load_dataset

    try:
        return load_dataset(dataset, data_root, imbalance=imbalance, seed=seed)
    except (DatasetNotFoundError, UnknownNameError, ValueError) as exc:
        _fail(str(exc))


@app.command()
def datasets(data_root: DataRoot = None) -> None:
    """List the registered datasets and whether they are available locally."""
    from distillset.data import available_datasets

    for name, found, where in available_datasets(data_root):
        mark = typer.style("yes", fg=typer.colors.GREEN) if found else typer.style("no ", fg=typer.colors.YELLOW)
        typer.echo(f"{name:22s} {mark}  {where}")


@app.command()
def methods() -> None:
    """List the distillation methods (objectives and presets) and coreset rules."""
    from distillset.coreset import SELECTION_RULES
    from distillset.engine import method_names

    typer.echo("distill --method: " + ", ".join(method_names()))
    typer.echo("coreset --method: " + ", ".join(SELECTION_RULES.names()))


@app.command()
def coreset(
    method: Annotated[str, typer.Option(help="random, herding, kcenter, kcenter-random.")] = "random",
    dataset: Annotated[str, typer.Option(help="Dataset name (see `distillset datasets`).")] = "fashion-mnist",
    ipc: Annotated[int, typer.Option(help="Images per class.")] = 10,
    out: Annotated[Path, typer.Option(help="Run directory to write.")] = Path("runs/coreset"),
    imbalance: Annotated[Optional[float], typer.Option(help="Imbalance ratio for *-lt datasets.")] = None,
    feature_epochs: Annotated[int, typer.Option(help="Epochs of the real-data feature network.")] = 3,
    seed: Seed = 0,
    device: Device = "cpu",
    data_root: DataRoot = None,
) -> None:
    """Select a coreset of real images and save it as a run."""
    from distillset.coreset import select_coreset

    splits = _load(dataset, data_root, imbalance, seed)
    start = time.perf_counter()
    try:
        subset = select_coreset(
            splits, method, ipc, seed=seed, feature_epochs=feature_epochs, device=_device(device), progress=True
        )
    except (UnknownNameError, ValueError) as exc:
        _fail(str(exc))
    config = {"method": method, "feature_model": "convnet3", "feature_epochs": feature_epochs, "imbalance": imbalance}
    save_run(out, subset, method=method, dataset=dataset, ipc=ipc, seed=seed, config=config,
             wall_seconds=time.perf_counter() - start, extra={"kind": "coreset", "imbalance": imbalance})
    typer.echo(f"saved {len(subset)} images to {out}")


@app.command()
def distill(
    method: Annotated[str, typer.Option(help="dm, hdd, idm, idm+hdd, csdm, cfm, ... (see `distillset methods`).")] = "dm",
    dataset: Annotated[str, typer.Option(help="Dataset name (see `distillset datasets`).")] = "fashion-mnist",
    ipc: Annotated[int, typer.Option(help="Images per class.")] = 10,
    iterations: Annotated[int, typer.Option(help="Distillation iterations.")] = 2000,
    out: Annotated[Path, typer.Option(help="Run directory (checkpoints, log, result).")] = Path("runs/distill"),
    resume: Annotated[bool, typer.Option(help="Continue from out/checkpoint.safetensors.")] = False,
    lr_img: Annotated[Optional[float], typer.Option(help="Image learning rate (method default if unset).")] = None,
    batch_real: Annotated[int, typer.Option(help="Real images per class per iteration.")] = 256,
    init: Annotated[str, typer.Option(help="real or noise.")] = "real",
    model: Annotated[str, typer.Option(help="Embedding network.")] = "convnet3",
    param: Annotated[Optional[list[str]], typer.Option(help="Objective hyperparameter key=value (repeatable).")] = None,
    classes: Annotated[Optional[str], typer.Option(help="Comma-separated class shard, e.g. 0,1,2.")] = None,
    imbalance: Annotated[Optional[float], typer.Option(help="Imbalance ratio for *-lt datasets.")] = None,
    prune_ratio: Annotated[Optional[float], typer.Option(help="Keep this fraction of the real pool (pruning).")] = None,
    prune_rule: Annotated[str, typer.Option(help="hyperbolic or random pruning of the real pool.")] = "hyperbolic",
    checkpoint_every: Annotated[int, typer.Option(help="Checkpoint interval (iterations).")] = 100,
    eval_every: Annotated[int, typer.Option(help="Quick evaluation every N iterations (0 = never).")] = 0,
    eval_epochs: Annotated[int, typer.Option(help="Epochs of the periodic quick evaluation.")] = 300,
    real_precision: Annotated[str, typer.Option(help="fp32 or bf16 for the real-feature pass.")] = "fp32",
    seed: Seed = 0,
    device: Device = "cpu",
    data_root: DataRoot = None,
) -> None:
    """Distil a synthetic set (resumable; Ctrl-C saves a checkpoint)."""
    from distillset.engine import CheckpointMismatchError, Distiller, config_for_method

    dev = _device(device)
    splits = _load(dataset, data_root, imbalance, seed)
    overrides: dict[str, Any] = {
        "ipc": ipc, "iterations": iterations, "batch_real": batch_real, "init": init, "model": model,
        "seed": seed, "checkpoint_every": checkpoint_every, "real_precision": real_precision,
        "objective_params": _parse_params(param),
    }
    if lr_img is not None:
        overrides["lr_img"] = lr_img
    if classes:
        overrides["classes"] = [int(c) for c in classes.split(",")]
    try:
        config = config_for_method(method, **overrides)
    except (UnknownNameError, ValueError, TypeError) as exc:
        _fail(str(exc))
    real = splits.train
    prune_info = None
    if prune_ratio is not None:
        real, prune_info = _prune_real(splits, prune_ratio, prune_rule, seed, dev)
    evaluate = None
    if eval_every:
        from distillset.evaluate import EvalConfig, evaluate_synthetic

        quick = EvalConfig(model=model, epochs=eval_epochs, num_models=1, seed=seed)

        def evaluate(synthetic):
            result = evaluate_synthetic(synthetic, splits.test, splits.info, quick, device=dev)
            return {"eval_accuracy": result.mean, "eval_epochs": eval_epochs}

    start = time.perf_counter()
    try:
        distiller = Distiller(real, splits.info, config, out_dir=out, device=dev, progress=True,
                              evaluate=evaluate, evaluate_every=eval_every)
        synthetic = distiller.run(resume=resume)
    except KeyboardInterrupt:
        typer.echo(f"\ninterrupted: checkpoint saved in {out}; continue with the same command plus --resume", err=True)
        raise typer.Exit(code=130) from None
    except (CheckpointMismatchError, FloatingPointError, ValueError, TypeError) as exc:
        _fail(str(exc))
    save_run(out, synthetic, method=method, dataset=dataset, ipc=ipc, seed=seed, config=asdict(config),
             wall_seconds=distiller.elapsed,
             extra={"kind": "distilled", "imbalance": imbalance, "prune": prune_info,
                    "session_seconds": round(time.perf_counter() - start, 3)})
    typer.echo(f"saved {len(synthetic)} images to {out}")


def _prune_real(splits, keep_ratio: float, rule: str, seed: int, device: torch.device):
    from distillset.coreset.prune import hyperbolic_prune, random_prune
    from distillset.nets import get_network

    train, info = splits.train, splits.info
    if rule == "random":
        keep = random_prune(train.labels, keep_ratio, seed=seed)
    elif rule == "hyperbolic":
        def factory(net_seed: int):
            return get_network("convnet3", info.channels, info.num_classes, info.image_size, seed=net_seed).to(device)

        keep = hyperbolic_prune(train.images, train.labels, keep_ratio, feature_net_factory=factory, seed=seed)
    else:
        _fail(f"unknown --prune-rule {rule!r}; choose hyperbolic or random")
    return train.subset(keep), {"rule": rule, "keep_ratio": keep_ratio, "kept": int(len(keep))}


def _architectures(model: str | None, models: str | None) -> tuple[list[str], int | None]:
    """``--models`` is a count (issue 3 style) or a comma list of architectures (issue 7 style)."""
    count = None
    names = model
    if models is not None:
        if models.isdigit():
            count = int(models)
        else:
            names = models if names is None else f"{names},{models}"
    return [n.strip() for n in (names or "convnet3").split(",") if n.strip()], count


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run directory written by distill or coreset.")],
    model: Annotated[Optional[str], typer.Option(help="Architecture(s), comma-separated.")] = None,
    models: Annotated[Optional[str], typer.Option(help="Number of models, or architectures (comma list).")] = None,
    num_models: Annotated[Optional[int], typer.Option(help="Networks trained per architecture.")] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs (paper protocol: 1000).")] = 1000,
    precision: Annotated[str, typer.Option(help="fp32 or bf16 autocast for training.")] = "fp32",
    data_root: DataRoot = None,
    seed: Seed = 0,
    device: Device = "cpu",
) -> None:
    """Train fresh networks on a run's set and test them on the real test split."""
    from distillset.evaluate import EvalConfig, evaluate_synthetic
    from distillset.evaluate.protocol import format_mean_std

    try:
        synthetic, manifest = load_run(run)
    except ArtifactError as exc:
        _fail(str(exc))
    architectures, count = _architectures(model, models)
    count = num_models or count or 5
    splits = _load(manifest["dataset"], data_root, manifest.get("imbalance"), manifest.get("seed", 0))
    results_path = run / EVALUATION_FILE
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for arch in architectures:
        try:
            config = EvalConfig(model=arch, epochs=epochs, num_models=count, precision=precision, seed=seed)
            result = evaluate_synthetic(synthetic, splits.test, splits.info, config, device=_device(device), progress=True)
        except (UnknownNameError, ValueError, FloatingPointError) as exc:
            _fail(str(exc))
        results[f"{arch}-e{epochs}-n{count}-s{seed}"] = result.to_dict()
        atomic_write_json(results_path, results)
        typer.echo(f"{arch:12s} {format_mean_std(result.mean, result.std)}  (n={count}, {epochs} epochs, final epoch)")


@app.command()
def inspect(
    run: Annotated[Path, typer.Argument(help="Run directory.")],
    grid: Annotated[Optional[Path], typer.Option(help="PNG path for the image grid (default run/grid.png).")] = None,
) -> None:
    """Print a run's manifest (verifying its hash) and write an image grid PNG."""
    from distillset.data import dataset_info
    from distillset.visualize import save_image_grid

    try:
        synthetic, manifest = load_run(run)
    except ArtifactError as exc:
        _fail(str(exc))
    typer.echo(json.dumps(manifest, indent=2, default=str))
    path = grid or run / "grid.png"
    save_image_grid(synthetic, dataset_info(manifest["dataset"]), path)
    typer.echo(f"image grid: {path}")


def main() -> None:
    try:
        app()
    except ArtifactError as exc:  # pragma: no cover - defensive, commands catch their own
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


__all__ = ["app", "main"]
