"""Command-line interface: ``distillset distill|coreset|evaluate|inspect|datasets|methods``."""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import torch
import typer

from distillset.artifacts import load_run, save_run
from distillset.io import ArtifactError, CheckpointMismatchError, RunDir, atomic_write_json
from distillset.registry import UnknownNameError, parse_key_values
from distillset.runtime import keep_large_allocations

app = typer.Typer(help="distillset: dataset distillation toolkit.", no_args_is_help=True, add_completion=False)

DataRoot = Annotated[Optional[Path], typer.Option("--data-root", help="Folder holding the dataset files.")]
Device = Annotated[str, typer.Option("--device", help="cpu or cuda.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for reproducible runs.")]


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        _fail("--device cuda was asked for but no CUDA GPU is visible to torch; use --device cpu")
    return torch.device(name)


def _parse_params(values: list[str] | None) -> dict[str, Any]:
    """``--param key=value`` pairs; values parsed as JSON where possible (numbers, true/false)."""
    try:
        return parse_key_values(values or [])
    except ValueError as exc:
        _fail(f"--param {exc}")


TRUSTED_KEYS_ENV = "DISTILLSET_TRUSTED_KEYS"


def _trusted_keys(require: bool, keys: list[Path] | None) -> list[Path]:
    """The public keys a run must be signed with: ``--trusted-key`` (repeatable), else $DISTILLSET_TRUSTED_KEYS
    (paths joined by the OS path separator); none means no signature is required, unless ``require``."""
    import os

    found = list(keys or []) or [Path(k) for k in os.environ.get(TRUSTED_KEYS_ENV, "").split(os.pathsep) if k]
    if require and not found:
        _fail(f"--require-signature needs the publisher's public key: pass --trusted-key PUB.pem or set "
              f"{TRUSTED_KEYS_ENV}")
    return found


def _open_run(run: Path, trusted_keys: list[Path] | None = None) -> tuple[Any, dict[str, Any]]:
    """A run's set and manifest (hash, manifest and consistency verified), or a clear CLI error. With trusted
    keys (argument or $DISTILLSET_TRUSTED_KEYS) the run must also carry a valid signature from one of them."""
    keys = trusted_keys if trusted_keys else _trusted_keys(False, None)
    try:
        if keys:
            from distillset.security.signing import load_trusted_run

            return load_trusted_run(run, keys)
        return load_run(run)
    except ArtifactError as exc:
        _fail(str(exc))


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
    method: Annotated[
        str,
        typer.Option(help="dm, hdd, idm, idm+hdd, csdm, cfm, ... (see `distillset methods`). A comma list "
                          "(dm,hdd,csdm or idm,idm+hdd) distils one set per method into out/<method>, sharing the real "
                          "pass (and IDM's network queue)."),
    ] = "dm",
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
    prune_rule: Annotated[
        str, typer.Option(help="Pruning rule: hyperbolic (most central), hyperbolic-spread or random.")
    ] = "hyperbolic",
    checkpoint_every: Annotated[int, typer.Option(help="Checkpoint interval (iterations).")] = 100,
    checkpoint_minutes: Annotated[float, typer.Option(help="Also checkpoint after this many minutes (0 = off).")] = 10,
    eval_every: Annotated[int, typer.Option(help="Quick evaluation every N iterations (0 = never).")] = 0,
    eval_epochs: Annotated[int, typer.Option(help="Epochs of the periodic quick evaluation.")] = 300,
    real_precision: Annotated[str, typer.Option(help="fp32 or bf16 for passes over real data.")] = "fp32",
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the networks (DM, IDM).")] = False,
    seed: Seed = 0,
    device: Device = "cpu",
    data_root: DataRoot = None,
) -> None:
    """Distil a synthetic set (resumable; Ctrl-C or SIGTERM saves a checkpoint)."""
    from distillset.engine import Distiller, config_for_method, run_together

    methods = [name.strip() for name in method.split(",") if name.strip()]
    if not methods or len(set(methods)) != len(methods):
        _fail(f"--method '{method}' must name one method or a comma list of different methods")

    dev = _device(device)
    splits = _load(dataset, data_root, imbalance, seed)
    overrides: dict[str, Any] = {
        "ipc": ipc, "iterations": iterations, "batch_real": batch_real, "init": init, "model": model,
        "seed": seed, "checkpoint_every": checkpoint_every, "checkpoint_seconds": 60 * checkpoint_minutes,
        "real_precision": real_precision, "compile": compile,
        "objective_params": _parse_params(param),
    }
    if lr_img is not None:
        overrides["lr_img"] = lr_img
    if classes:
        overrides["classes"] = [int(c) for c in classes.split(",")]
    try:
        configs = [config_for_method(name, **overrides) for name in methods]
    except (UnknownNameError, ValueError, TypeError) as exc:
        _fail(str(exc))
    outs = [out] if len(methods) == 1 else [out / name for name in methods]
    real = splits.train
    prune_info = None
    if prune_ratio is not None:
        from distillset.coreset.prune import prune_pool

        try:
            real, prune_info = prune_pool(splits.train, splits.info, prune_ratio, prune_rule, seed=seed, device=dev)
        except ValueError as exc:
            _fail(str(exc))
    evaluate = None
    if eval_every:
        from distillset.evaluate import EvalConfig, evaluate_synthetic

        quick = EvalConfig(model=model, epochs=eval_epochs, num_models=1, seed=seed)

        def evaluate(synthetic):
            result = evaluate_synthetic(synthetic, splits.test, splits.info, quick, device=dev)
            return {"eval_accuracy": result.mean, "eval_epochs": eval_epochs}

    start = time.perf_counter()
    try:
        distillers = [Distiller(real, splits.info, config, out_dir=run_dir, device=dev, progress=True,
                                evaluate=evaluate, evaluate_every=eval_every)
                      for config, run_dir in zip(configs, outs, strict=True)]
        sets = run_together(distillers, resume=resume)
    except KeyboardInterrupt:
        typer.echo(f"\ninterrupted: checkpoint saved in {out}; continue with the same command plus --resume", err=True)
        raise typer.Exit(code=130) from None
    except (CheckpointMismatchError, FloatingPointError, ValueError, TypeError) as exc:
        _fail(str(exc))
    together = {"distilled_with": methods} if len(methods) > 1 else {}
    for name, run_dir, distiller, synthetic in zip(methods, outs, distillers, sets, strict=True):
        save_run(run_dir, synthetic, method=name, dataset=dataset, ipc=ipc, seed=seed,
                 config=asdict(distiller.config), wall_seconds=distiller.elapsed,
                 extra={"kind": "distilled", "imbalance": imbalance, "prune": prune_info,
                        "session_seconds": round(time.perf_counter() - start, 3), **together})
        typer.echo(f"saved {len(synthetic)} images to {run_dir}")


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
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile each trained network.")] = False,
    elf: Annotated[
        bool, typer.Option("--elf", help="Train with ELF distillation features (docs/evaluation.md).")
    ] = False,
    elf_param: Annotated[
        Optional[list[str]], typer.Option(help="ELF setting key=value (repeatable), e.g. feature_epochs=3.")
    ] = None,
    fair_metrics: Annotated[
        bool, typer.Option("--fair-metrics", help="Also compute IOR, HLR and LRS (docs/evaluation.md).")
    ] = False,
    full_data_accuracy: Annotated[
        Optional[list[str]],
        typer.Option(help="Full-data accuracy for HLR: ARCH=PERCENT or PERCENT (repeatable); else trained."),
    ] = None,
    full_data_epochs: Annotated[int, typer.Option(help="Epochs of the full-data network when HLR must train one.")] = 3,
    require_signature: Annotated[bool, typer.Option(
        "--require-signature", help="Refuse the run unless a trusted key signed it (docs/security.md).")] = False,
    trusted_key: Annotated[Optional[list[Path]], typer.Option(
        help="Publisher's public key (repeatable); implies --require-signature. Default: $DISTILLSET_TRUSTED_KEYS.",
    )] = None,
    data_root: DataRoot = None,
    seed: Seed = 0,
    device: Device = "cpu",
) -> None:
    """Train fresh networks on a run's set and test them on the real test split."""
    from distillset.evaluate import EvalConfig, evaluate_synthetic
    from distillset.evaluate.elf import ELFConfig, evaluate_elf
    from distillset.evaluate.metrics import fair_metrics as compute_fair_metrics
    from distillset.evaluate.protocol import format_mean_std

    synthetic, manifest = _open_run(run, _trusted_keys(require_signature, trusted_key))
    architectures, count = _architectures(model, models)
    count = num_models or count or 5
    splits = _load(manifest["dataset"], data_root, manifest.get("imbalance"), manifest.get("seed", 0))
    results_path = RunDir(run).evaluation
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    dev = _device(device)
    try:
        elf_config = ELFConfig(**_parse_params(elf_param)) if elf else None
    except (TypeError, ValueError) as exc:
        _fail(f"--elf-param: {exc}")
    full_accuracies = _full_data_accuracies(full_data_accuracy, architectures)

    def run_evaluation(images, config, checkpoint_dir=None):
        if elf_config is None:
            return evaluate_synthetic(images, splits.test, splits.info, config, device=dev, progress=True,
                                      checkpoint_dir=checkpoint_dir)
        return evaluate_elf(images, splits, config, elf_config, device=dev, progress=True)

    for arch in architectures:
        key = f"{arch}-e{epochs}-n{count}-s{seed}" + ("-elf" if elf_config else "") + (
            f"-{precision}" if precision != "fp32" else "")
        training = RunDir(run).evaluation_work / key  # tested models and the one in training: a rerun resumes
        try:
            config = EvalConfig(model=arch, epochs=epochs, num_models=count, precision=precision, seed=seed,
                                compile=compile)
            result = run_evaluation(synthetic, config, training)
            entry = result.to_dict()
            if fair_metrics:
                entry["fair_metrics"] = compute_fair_metrics(
                    synthetic, splits, config, evaluate=run_evaluation, synthetic_result=result,
                    full_accuracy=full_accuracies.get(arch), full_data_epochs=full_data_epochs, device=dev,
                ).to_dict()
        except (UnknownNameError, ValueError, FloatingPointError, CheckpointMismatchError, ArtifactError) as exc:
            _fail(str(exc))
        results[key] = entry
        atomic_write_json(results_path, results)
        shutil.rmtree(training, ignore_errors=True)
        typer.echo(f"{arch + (' +ELF' if elf_config else ''):17s} {format_mean_std(result.mean, result.std)}  "
                   f"(n={count}, {epochs} epochs, final epoch)")
        if fair_metrics:
            fair = entry["fair_metrics"]
            typer.echo(f"{'':17s} IOR {format_mean_std(fair['ior_mean'], fair['ior_std'])}  "
                       f"HLR {format_mean_std(fair['hlr_mean'], fair['hlr_std'])}  "
                       f"LRS {format_mean_std(fair['lrs_mean'], fair['lrs_std'])}  "
                       f"(full data {fair['full_data_accuracy']:.1f}%)")


def _full_data_accuracies(values: list[str] | None, architectures: list[str]) -> dict[str, float]:
    """``--full-data-accuracy`` values: ``ARCH=PERCENT`` pairs, or one bare ``PERCENT`` for every architecture."""
    accuracies: dict[str, float] = {}
    for item in values or []:
        arch, sep, raw = item.rpartition("=")
        try:
            value = float(raw)
        except ValueError:
            _fail(f"--full-data-accuracy expects ARCH=PERCENT or PERCENT, got {item!r}")
        if not 0.0 <= value <= 100.0:
            _fail(f"--full-data-accuracy is a percentage in [0, 100], got {value}")
        accuracies.update({arch: value} if sep else dict.fromkeys(architectures, value))
    return accuracies


@app.command()
def inspect(
    run: Annotated[Path, typer.Argument(help="Run directory.")],
    grid: Annotated[Optional[Path], typer.Option(help="PNG path for the image grid (default run/grid.png).")] = None,
) -> None:
    """Print a run's manifest (verifying its hash) and write an image grid PNG."""
    from distillset.data import dataset_info
    from distillset.visualize import save_image_grid

    synthetic, manifest = _open_run(run)
    typer.echo(json.dumps(manifest, indent=2, default=str))
    path = grid or RunDir(run).grid
    save_image_grid(synthetic, dataset_info(manifest["dataset"]), path)
    typer.echo(f"image grid: {path}")


def _ridge_beta_levels(name: str, manifest: dict[str, Any], real_trace: float) -> dict[str, float]:
    """The ridge beta(s) of a run's objective (CFM start/end, low/high-pass beta) in FFC eigenvalue units.

    The objectives set beta relative to tr(FFC_real) of the step's real features; ``real_trace`` is that
    trace for the plotted real features. Runs whose objective has no ridge beta give no levels.
    """
    from distillset.objectives import get_objective

    config = manifest.get("config", {})
    try:
        settings = get_objective(config.get("objective", ""), **config.get("objective_params", {})).config()
    except (UnknownNameError, TypeError, ValueError):
        return {}
    labels = {"beta": "\u03b2", "beta_start": "\u03b2 start", "beta_end": "\u03b2 end"}
    return {f"{name} {label}": settings[key] * real_trace for key, label in labels.items() if key in settings}


@app.command()
def spectrum(
    runs: Annotated[list[Path], typer.Argument(help="Run directories (one or more, same dataset), plotted together.")],
    out: Annotated[
        Optional[Path],
        typer.Option(help="PNG path (default: spectrum.png in the first run; eigenvalues beside it as .json)."),
    ] = None,
    model: Annotated[str, typer.Option(help="Network whose features are compared.")] = "convnet3",
    trained_epochs: Annotated[
        int, typer.Option(help="0: a random network (seeded); N: trained N epochs on the real data.")
    ] = 0,
    real_per_class: Annotated[int, typer.Option(help="Real images per class drawn for the real spectrum.")] = 500,
    per_class: Annotated[
        bool, typer.Option("--per-class", help="One panel per class instead of the pooled spectrum.")
    ] = False,
    data_root: DataRoot = None,
    seed: Seed = 0,
    device: Device = "cpu",
) -> None:
    """Plot the FFC eigenvalues of real vs synthetic features under one network (UniDD, docs/unidd_cfm.md Sec. 7).

    With several runs (e.g. DM, CFM and its fixed-filter ablations) every set is embedded by the same network
    and drawn against the same real spectrum; ridge-filter runs also get their beta levels (pooled plot).
    """
    from distillset.data.base import ImageSet
    from distillset.evaluate.spectrum import image_ffc_spectra, plot_ffc_spectra
    from distillset.nets import get_network
    from distillset.training import trained_feature_network

    if real_per_class < 1:
        _fail(f"--real-per-class must be >= 1, got {real_per_class}")
    opened = [(run, *_open_run(run)) for run in runs]
    manifest = opened[0][2]
    for run, _, other in opened[1:]:
        for key in ("dataset", "imbalance"):
            if other.get(key) != manifest.get(key):
                _fail(f"{run} has {key} {other.get(key)!r} but {runs[0]} has {manifest.get(key)!r}; "
                      "plot runs of the same dataset together")
    methods = [str(other["method"]) for _, _, other in opened]
    named = {method if methods.count(method) == 1 else f"{method} ({run.name})": (run, images, run_manifest)
             for method, (run, images, run_manifest) in zip(methods, opened, strict=True)}
    splits = _load(manifest["dataset"], data_root, manifest.get("imbalance"), seed)
    dev = _device(device)
    info = splits.info
    if trained_epochs > 0:
        net = trained_feature_network(splits, model, epochs=trained_epochs, seed=seed, device=dev)
        network = f"{model} trained {trained_epochs} epochs on real data"
    else:
        net = get_network(model, info.channels, info.num_classes, info.image_size, seed=seed).to(dev)
        network = f"{model}, random init (seed {seed})"
    net.eval()
    generator = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(info.num_classes):
        members = splits.train.class_indices(c)
        picks.append(members[torch.randperm(len(members), generator=generator)[:real_per_class]])
    real = splits.train.subset(torch.cat(picks))
    synthetic_sets = {name: ImageSet(images.images.to(dev), images.labels.to(dev))
                      for name, (_, images, _) in named.items()}
    spectra = image_ffc_spectra(net.embed, ImageSet(real.images.to(dev), real.labels.to(dev)), synthetic_sets,
                                per_class=per_class)
    levels: dict[str, float] = {}
    if not per_class:
        real_trace = float(spectra[0].real.sum())
        for name, (_, _, run_manifest) in named.items():
            levels.update(_ridge_beta_levels(name, run_manifest, real_trace))
    path = out or RunDir(runs[0]).spectrum
    title = (f"{', '.join(named)}: {manifest['dataset']} IPC {'/'.join(sorted({str(m['ipc']) for _, _, m in opened}))}"
             f", FFC spectrum, {network}")
    plot_ffc_spectra(spectra, path, title=title, levels=levels)
    atomic_write_json(path.with_suffix(".json"), {
        "runs": {name: str(run) for name, (run, _, _) in named.items()},
        "network": network, "real_per_class": real_per_class, "levels": levels,
        "spectra": {panel.label: {"real": panel.real.tolist(),
                                  "synthetic": {name: values.tolist() for name, values in panel.synthetic.items()}}
                    for panel in spectra},
    })
    for panel in spectra:
        top = min(10, len(panel.real))
        for name, values in panel.synthetic.items():
            ratio = (values[:top] / panel.real[:top].clamp_min(1e-30)).tolist()
            typer.echo(f"{panel.label}, {name}: synthetic/real eigenvalue ratio, top {top}: "
                       + " ".join(f"{r:.2f}" for r in ratio))
    typer.echo(f"spectrum plot: {path}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's runs and report.")] = Path("runs/demo"),
    ipc: Annotated[int, typer.Option(help="Images per class.")] = 10,
    iterations: Annotated[int, typer.Option(help="DM iterations.")] = 200,
    epochs: Annotated[int, typer.Option(help="Evaluation epochs (paper protocol: 1000).")] = 300,
    num_models: Annotated[int, typer.Option(help="Networks trained per set.")] = 2,
    data_root: DataRoot = None,
    seed: Seed = 0,
    device: Device = "cpu",
) -> None:
    """The main job on an embedded default: distil with DM, compare with a random real subset, report."""
    from distillset.coreset import select_coreset
    from distillset.data import available_datasets
    from distillset.engine import Distiller, config_for_method
    from distillset.evaluate import EvalConfig, evaluate_synthetic
    from distillset.evaluate.protocol import format_mean_std
    from distillset.visualize import save_image_grid

    dev = _device(device)
    found = {name for name, ok, _ in available_datasets(data_root) if ok}
    dataset = "fashion-mnist" if "fashion-mnist" in found else "digits"
    typer.echo(f"demo dataset: {dataset} ({'Debian package' if dataset == 'fashion-mnist' else 'embedded fallback'})")
    splits = _load(dataset, data_root, None, seed)
    start = time.perf_counter()
    config = config_for_method("dm", ipc=ipc, iterations=iterations, seed=seed, real_precision="bf16")
    distiller = Distiller(splits.train, splits.info, config, out_dir=out / "dm", device=dev, progress=True)
    sets = {"dm": distiller.run(resume=True)}
    save_run(out / "dm", sets["dm"], method="dm", dataset=dataset, ipc=ipc, seed=seed, config=asdict(config),
             wall_seconds=distiller.elapsed, extra={"kind": "distilled"})
    sets["random"] = select_coreset(splits, "random", ipc, seed=seed)
    save_run(out / "random", sets["random"], method="random", dataset=dataset, ipc=ipc, seed=seed,
             config={"method": "random"}, wall_seconds=0.0, extra={"kind": "coreset"})
    eval_config = EvalConfig(epochs=epochs, num_models=num_models, seed=seed)
    summary: dict[str, Any] = {"dataset": dataset, "ipc": ipc, "iterations": iterations,
                               "evaluation": asdict(eval_config)}
    lines = [f"# distillset demo: {dataset}, IPC {ipc}", "",
             f"DM {iterations} iterations; ConvNet-3 trained {epochs} epochs, {num_models} models per set "
             "(final-epoch test accuracy).", "", "| set | accuracy (%) |", "|---|---|"]
    for name, synthetic in sets.items():
        result = evaluate_synthetic(synthetic, splits.test, splits.info, eval_config, device=dev, progress=True)
        summary[name] = result.to_dict()
        save_image_grid(synthetic, splits.info, out / f"{name}.png")
        lines.append(f"| {name} | {format_mean_std(result.mean, result.std)} |")
        typer.echo(f"{name:8s} {format_mean_std(result.mean, result.std)}")
    lines += ["", "![dm](dm.png) ![random](random.png)", ""]
    summary["wall_seconds"] = round(time.perf_counter() - start, 1)
    atomic_write_json(RunDir(out).summary, summary)
    RunDir(out).report.write_text("\n".join(lines))
    typer.echo(f"report: {RunDir(out).report} (summary.json, dm.png, random.png beside it)")


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="Run directory to export.")],
    out: Annotated[Path, typer.Option(help="Folder to write.")],
    fmt: Annotated[
        str, typer.Option("--format", help="ddranking (images.pt, labels.pt) or imagefolder (PNGs).")
    ] = "ddranking",
) -> None:
    """Export a run's set for other tools (DD-Ranking tensors or an image folder)."""
    from distillset.interop import export_run

    try:
        export_run(run, out, fmt)
    except (ArtifactError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(f"exported {run} to {out} ({fmt})")


@app.command("import")
def import_(
    source: Annotated[Path, typer.Argument(help="DM result file (res_*.pt), DD-Ranking folder or image folder.")],
    dataset: Annotated[str, typer.Option(help="Dataset the set was distilled from (pixels are normalised with it).")],
    out: Annotated[Path, typer.Option(help="Run directory to create.")],
    fmt: Annotated[str, typer.Option("--format", help="dm, ddranking or imagefolder.")] = "dm",
    method: Annotated[
        Optional[str], typer.Option(help="Method name for the manifest (default imported-FORMAT).")
    ] = None,
    experiment: Annotated[int, typer.Option(help="Experiment index in a DM result file.")] = 0,
) -> None:
    """Import a published synthetic set into a run directory (tensors read with weights_only=True)."""
    from distillset.interop import import_set

    try:
        import_set(source, out, fmt=fmt, dataset=dataset, method=method, experiment=experiment)
    except (UnknownNameError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(f"imported {source} into {out}; evaluate it with `distillset evaluate {out}`")


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="Run directories to compare.")],
    out: Annotated[Path, typer.Option(help="HTML file to write.")] = Path("report.html"),
    title: Annotated[str, typer.Option(help="Page title.")] = "distillset report",
    caption: Annotated[str, typer.Option(help="Text under the title (e.g. how the runs were made).")] = "",
) -> None:
    """Write one self-contained HTML page: image grids, curves, accuracy tables, per-class bars, manifests."""
    from distillset.report import build_report

    try:
        path = build_report(runs, out, title=title, caption=caption)
    except (ArtifactError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(f"report: {path}")


@app.command()
def keygen(
    key: Annotated[Path, typer.Argument(help="Private key file to create (PEM, mode 0600).")],
    public: Annotated[Optional[Path], typer.Option(help="Public key file (default: KEY with .pub.pem).")] = None,
) -> None:
    """Create an ed25519 key pair for signing run folders (never overwrites a key)."""
    from distillset.security.signing import generate_keypair

    public = public or key.with_name(key.name.removesuffix(".pem") + ".pub.pem")
    try:
        fingerprint = generate_keypair(key, public)
    except (FileExistsError, OSError) as exc:
        _fail(str(exc))
    typer.echo(f"private key {key} (0600, keep it secret), public key {public} (share it); key id {fingerprint}")


@app.command()
def sign(
    run: Annotated[Path, typer.Argument(help="Run directory to sign.")],
    key: Annotated[Path, typer.Option(help="Private key (PEM) from `distillset keygen`.")],
) -> None:
    """Sign a run folder (its whole manifest and tensor file) with an ed25519 key: writes signature.json."""
    from distillset.security.signing import sign_run

    try:
        path = sign_run(run, key)
    except ArtifactError as exc:
        _fail(str(exc))
    typer.echo(f"signed {run}: {path}")


@app.command()
def verify(
    run: Annotated[Path, typer.Argument(help="Run directory to check.")],
    key: Annotated[list[Path], typer.Option(help="Trusted public key (PEM), repeatable.")],
) -> None:
    """Check a run's signature against trusted public keys and that nothing changed since it was signed."""
    from distillset.security.signing import load_trusted_run, verify_run

    try:
        verified = verify_run(run, key)
        load_trusted_run(run, key)
    except ArtifactError as exc:
        _fail(str(exc))
    typer.echo(f"OK: {run} is signed by trusted key {verified.key_id} and unchanged")


@app.command()
def scan(
    run: Annotated[Path, typer.Argument(help="Run directory to scan for a backdoor.")],
    threshold: Annotated[float, typer.Option(help="Anomaly index above which the set is flagged.")] = 2.0,
    steps: Annotated[int, typer.Option(help="Trigger optimisation steps per class.")] = 100,
    out: Annotated[Optional[Path], typer.Option(help="Also write the result as JSON here.")] = None,
    seed: Seed = 0,
    device: Device = "cpu",
) -> None:
    """Look for a backdoor in a set from the set alone (trigger reverse-engineering; docs/security.md).
    Exit code 0: nothing found, 3: flagged."""
    from distillset.data import dataset_info
    from distillset.security.scan import ScanConfig, scan_set

    synthetic, manifest = _open_run(run)
    result = scan_set(synthetic, dataset_info(manifest["dataset"]),
                      ScanConfig(threshold=threshold, steps=steps, seed=seed), device=_device(device))
    if out is not None:
        atomic_write_json(out, {"run": str(run), **result.to_dict()})
    verdict = "FLAGGED: likely backdoor" if result.flagged else "no backdoor found"
    typer.echo(f"{verdict}; suspect class {result.suspect_class}, anomaly index {result.anomaly_index:.2f} "
               f"(threshold {threshold}); reversed-trigger mask L1 per class: "
               + " ".join(f"{v:.1f}" for v in result.mask_l1))
    if result.flagged:
        raise typer.Exit(code=3)


attack_app = typer.Typer(help="Attacks on distilled sets, for auditing defences only (docs/security.md).",
                         no_args_is_help=True)
app.add_typer(attack_app, name="attack")


@attack_app.command("dark")
def attack_dark(
    run: Annotated[Path, typer.Argument(help="Run directory to attack.")],
    out: Annotated[Path, typer.Option(help="Run directory to write the poisoned set to.")],
    trigger: Annotated[str, typer.Option(help="patch or blended.")] = "patch",
    target: Annotated[int, typer.Option(help="Class that triggered inputs should be sent to.")] = 0,
    alpha: Annotated[float, typer.Option(help="Weight of the backdoor term (paper code: 0.6).")] = 0.6,
    trigger_size: Annotated[int, typer.Option(help="Patch side in pixels.")] = 1,
    trigger_value: Annotated[float, typer.Option(help="Patch value in normalised space.")] = 10.0,
    blend_ratio: Annotated[float, typer.Option(help="Blended trigger: weight of the noise pattern.")] = 0.2,
    trajectory_points: Annotated[int, typer.Option(help="Trajectory points 0..N (paper code: 10).")] = 10,
    match_steps: Annotated[int, typer.Option(help="Image updates per point (paper code: 101).")] = 101,
    width: Annotated[Optional[int], typer.Option(help="Width of the attacker's ConvNets (default 128).")] = None,
    seed: Seed = 0,
    device: Device = "cpu",
) -> None:
    """Dark Distillation: inject a backdoor into a distilled set without raw data (research/audit tool)."""
    from distillset.data import dataset_info
    from distillset.security.dark_distillation import DarkDistillationConfig, dark_distillation
    from distillset.security.triggers import TriggerSpec

    synthetic, manifest = _open_run(run)
    try:
        config = DarkDistillationConfig(
            target=target, alpha=alpha, trajectory_points=trajectory_points, match_steps=match_steps, width=width,
            seed=seed, trigger=TriggerSpec(kind=trigger, size=trigger_size, value=trigger_value,  # type: ignore[arg-type]
                                           blend_ratio=blend_ratio, pattern_seed=seed))
        result = dark_distillation(synthetic, dataset_info(manifest["dataset"]), config, device=_device(device),
                                   progress=True)
    except ValueError as exc:
        _fail(str(exc))
    save_run(out, result.poisoned, method=manifest["method"], dataset=manifest["dataset"], ipc=manifest["ipc"],
             seed=manifest["seed"], config=manifest.get("config", {}), wall_seconds=result.seconds,
             extra={"kind": "poisoned", "attack": {"name": "dark-distillation", **config.to_dict()},
                    "source": {"run": str(run), "sha256": manifest["tensors"]["sha256"]}})
    typer.echo(f"poisoned set written to {out} in {result.seconds:.1f} s (target {target}, {trigger} trigger); "
               "for auditing defences only")


def main() -> None:
    keep_large_allocations()
    try:
        app()
    except ArtifactError as exc:  # pragma: no cover - defensive, commands catch their own
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


__all__ = ["app", "main"]
