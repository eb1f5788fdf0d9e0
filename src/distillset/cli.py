"""Command-line interface: ``distillset distill|coreset|evaluate|inspect|datasets|methods``."""

from __future__ import annotations

import json
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
from distillset.runtime import PRECISIONS, apply_process_settings, default_compile, resolve_precision, runtime_record

app = typer.Typer(help="distillset: dataset distillation toolkit.", no_args_is_help=True, add_completion=False)

DataRoot = Annotated[Optional[Path], typer.Option("--data-root", help="Folder holding the dataset files.")]
Device = Annotated[str, typer.Option("--device", help="cpu or cuda.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for reproducible runs.")]
Precision = Annotated[str, typer.Option(
    "--precision", help="auto: bf16 autocast where the hardware has native bf16 (CPU with AMX / AVX-512 BF16, or "
                        "CUDA), else fp32; or fp32 / bf16. Weights and synthetic images stay fp32.")]
Compile = Annotated[Optional[bool], typer.Option(
    "--compile/--no-compile", show_default="compile",
    help="torch.compile the networks; falls back to eager, with one warning, where compilation fails.")]
Deterministic = Annotated[bool, typer.Option(
    "--deterministic", help="Deterministic GPU kernels where PyTorch has them (cuDNN autotuning off; somewhat "
                             "slower); CPU runs are deterministic already (docs/scale-out.md).")]
Models = Annotated[Optional[str], typer.Option(
    "--models", "--num-models", metavar="N", help="Networks trained per architecture (--num-models: same).")]


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        _fail("--device cuda was asked for but no CUDA GPU is visible to torch; use --device cpu")
    return torch.device(name)


def _compiles(compile: bool | None) -> bool:
    """Whether to compile: ``--compile/--no-compile`` when given, else the default (on unless DISTILLSET_COMPILE)."""
    return default_compile() if compile is None else compile


def _speed(precision: str, compile: bool | None, device: torch.device) -> tuple[str, bool]:
    """The precision that runs on ``device`` (``auto`` resolved) and whether to compile (default: on)."""
    if precision not in PRECISIONS:
        _fail(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return resolve_precision(precision, device), _compiles(compile)


def _ranks(device: str, deterministic: bool):
    """This process's device and, under torchrun, its rank group (None in a single process; docs/scale-out.md)."""
    from distillset.engine.distributed import deterministic_mode, join, rank_device, ranks_from_env

    try:
        ranks = ranks_from_env()
        dev = rank_device(_device(device), ranks)
    except ValueError as exc:
        _fail(str(exc))
    if deterministic:
        deterministic_mode()
    return dev, join(ranks, dev)


def _real_images(real, cache: bool | None, group):
    """``(real, True)`` held in memory (``--cache``), or ``(memory-mapped images, False)`` from their array file under
    $DISTILLSET_CACHE/arrays, written once per node by its local rank 0 (``--no-cache``; by default for splits over
    2 GiB)."""
    from distillset.data.arrays import array_path, open_array, should_cache, write_array
    from distillset.training import cache_dir

    if should_cache(real, cache):
        return real, True
    if group is None or group.ranks.local_rank == 0:  # atomic and named by content: safe on a shared file system
        write_array(real, cache_dir() / "arrays")
    if group is not None:
        group.barrier()
    return open_array(array_path(real, cache_dir() / "arrays"), real.labels), False


def _count(models: str | None, default: int) -> int:
    """``--models N``: a positive number of networks."""
    if models is None:
        return default
    if not models.isdigit() or int(models) < 1:
        _fail(f"--models is the number of networks per architecture (a positive integer), got {models!r}; "
              "name architectures with --model, e.g. --model convnet3,resnet18")
    return int(models)


def _parse_params(values: list[str] | None, option: str = "--param") -> dict[str, Any]:
    """``key=value`` pairs of ``option``; values parsed as JSON where possible (numbers, true/false)."""
    try:
        return parse_key_values(values or [])
    except ValueError as exc:
        _fail(f"{option} {exc}")


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


def _load(dataset: str, data_root: Path | None, imbalance: float | None, seed: int,
          bias: dict[str, Any] | None = None):
    """``bias``: ``{"ratio": rho, "severity": s}`` for biased datasets (``--bias-ratio``, ``--severity``)."""
    from distillset.data import DatasetNotFoundError, load_dataset

    bias = bias or {}
    try:
        return load_dataset(dataset, data_root, imbalance=imbalance, seed=seed, bias_ratio=bias.get("ratio"),
                            severity=bias.get("severity", 2))
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
    from distillset.engine.teacher_matching import TEACHER_METHODS

    typer.echo("distill --method: " + ", ".join(method_names()))
    typer.echo("distill --method, with --teacher (docs/unidd_cfm.md Sec. 8): " + ", ".join(TEACHER_METHODS))
    typer.echo("coreset --method: " + ", ".join(SELECTION_RULES.names()))


@app.command()
def coreset(
    method: Annotated[str, typer.Option(help="random, herding, kcenter, kcenter-random.")] = "random",
    dataset: Annotated[str, typer.Option(help="Dataset name (see `distillset datasets`).")] = "fashion-mnist",
    ipc: Annotated[int, typer.Option(help="Images per class.")] = 10,
    out: Annotated[Path, typer.Option(help="Run directory to write.")] = Path("runs/coreset"),
    imbalance: Annotated[Optional[float], typer.Option(help="Imbalance ratio for *-lt datasets.")] = None,
    feature_epochs: Annotated[int, typer.Option(help="Epochs of the real-data feature network.")] = 3,
    teacher: Annotated[Optional[Path], typer.Option(
        help="Teacher folder (`distillset teacher train`, same dataset): its embedding gives the features instead "
             "of a feature network trained for --feature-epochs (docs/coreset.md).")] = None,
    precision: Precision = "auto",
    compile: Compile = None,
    seed: Seed = 0,
    device: Device = "cpu",
    data_root: DataRoot = None,
) -> None:
    """Select a coreset of real images and save it as a run."""
    from distillset.coreset import select_coreset
    from distillset.training.teachers import teacher_of, teacher_record

    dev = _device(device)
    precision, compile = _speed(precision, compile, dev)
    splits = _load(dataset, data_root, imbalance, seed)
    start = time.perf_counter()
    try:
        loaded = teacher_of(teacher, splits.info, use="coreset --teacher", device=dev) if teacher else None
        subset = select_coreset(splits, method, ipc, seed=seed, feature_epochs=feature_epochs, teacher=loaded,
                                device=dev, progress=True, precision=precision, compile=compile)
    except (UnknownNameError, ValueError, ArtifactError) as exc:
        _fail(str(exc))
    config = {"method": method, "feature_model": "convnet3", "feature_epochs": feature_epochs, "imbalance": imbalance}
    if loaded is not None:  # the teacher's network gives the features
        config.update(feature_model=loaded.recipe.model, feature_epochs=loaded.recipe.epochs,
                      teacher=teacher_record(loaded))
    elif method != "random":  # the feature network's training settings
        config.update(feature_precision=precision, feature_compile=compile)
    save_run(out, subset, method=method, dataset=dataset, ipc=ipc, seed=seed, config=config,
             wall_seconds=time.perf_counter() - start,
             extra={"kind": "coreset", "imbalance": imbalance, "runtime": runtime_record(dev, precision, compile)})
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
    lr_schedule: Annotated[str, typer.Option(
        help="Image learning rate over the iterations: constant, or cosine (decayed to 0 at the end).")] = "constant",
    batch_real: Annotated[Optional[int], typer.Option(
        help="Real images per class per iteration (method default if unset: 256; IDM at IPC 1: 5000).")] = None,
    init: Annotated[str, typer.Option(help="real or noise.")] = "real",
    model: Annotated[str, typer.Option(help="Embedding network.")] = "convnet3",
    param: Annotated[Optional[list[str]], typer.Option(help="Objective hyperparameter key=value (repeatable).")] = None,
    queue: Annotated[Optional[list[str]], typer.Option(
        help="IDM queue setting key=value (repeatable), e.g. push_interval=5 (docs/methods.md).")] = None,
    classes: Annotated[Optional[str], typer.Option(help="Comma-separated class shard, e.g. 0,1,2.")] = None,
    imbalance: Annotated[Optional[float], typer.Option(help="Imbalance ratio for *-lt datasets.")] = None,
    bias_ratio: Annotated[Optional[float], typer.Option(
        help="Biased datasets (*-colour, *-corrupted): bias-aligned fraction of each class, e.g. 0.95.")] = None,
    severity: Annotated[int, typer.Option(help="Bias severity 1..4 of biased datasets.")] = 2,
    debias: Annotated[str, typer.Option(
        help="none, or kde: draw real images with inverse-density weights (docs/biased.md).")] = "none",
    debias_param: Annotated[Optional[list[str]], typer.Option(
        help="Debias setting key=value (repeatable), e.g. embedding=trained, bandwidth_scale=0.1.")] = None,
    prune_ratio: Annotated[Optional[float], typer.Option(help="Keep this fraction of the real pool (pruning).")] = None,
    prune_rule: Annotated[
        str, typer.Option(help="Pruning rule: hyperbolic (most central), hyperbolic-spread or random.")
    ] = "hyperbolic",
    prune_teacher: Annotated[Optional[Path], typer.Option(
        help="Teacher folder (same dataset) whose embedding scores the hyperbolic pruning instead of random "
             "networks (docs/hdd.md).")] = None,
    checkpoint_every: Annotated[int, typer.Option(help="Checkpoint interval (iterations).")] = 100,
    checkpoint_minutes: Annotated[float, typer.Option(help="Also checkpoint after this many minutes (0 = off).")] = 10,
    eval_every: Annotated[int, typer.Option(help="Quick evaluation every N iterations (0 = never).")] = 0,
    eval_epochs: Annotated[int, typer.Option(help="Epochs of the periodic quick evaluation.")] = 300,
    precision: Annotated[str, typer.Option(
        "--precision", "--real-precision",
        help="Of the passes over real data (the no-grad real features; IDM's queue training): auto (bf16 where the "
             "hardware has native bf16, CPU with AMX / AVX-512 BF16 or CUDA, else fp32), fp32 or bf16. The "
             "synthetic images and their gradients stay fp32.")] = "auto",
    compile: Compile = None,
    teacher: Annotated[Optional[Path], typer.Option(
        help="Teacher folder (`distillset teacher train`) for the decoupled methods cfm-teacher, lowpass-teacher, "
             "highpass-teacher, dm-teacher (docs/unidd_cfm.md Sec. 8).")] = None,
    seed: Seed = 0,
    device: Device = "cpu",
    data_root: DataRoot = None,
    cache: Annotated[Optional[bool], typer.Option(
        "--cache/--no-cache", show_default="cache below 2 GiB",
        help="Hold the real training images in memory (and on the device), or memory-map them from an array file "
             "written once under $DISTILLSET_CACHE/arrays and move only each batch (large datasets; torchrun "
             "processes on a node share it). Same result either way.")] = None,
    deterministic: Deterministic = False,
) -> None:
    """Distil a synthetic set (resumable; Ctrl-C or SIGTERM saves a checkpoint). Under torchrun the classes are
    split over the processes and rank 0 writes the one result (docs/scale-out.md)."""
    from distillset.engine import Distiller, config_for_method, run_together
    from distillset.engine.debias import debias_teacher_record

    methods = [name.strip() for name in method.split(",") if name.strip()]
    if not methods or len(set(methods)) != len(methods):
        _fail(f"--method '{method}' must name one method or a comma list of different methods")
    if teacher is not None or any(name.endswith("-teacher") for name in methods):
        _distill_with_teacher(methods, teacher, dataset=dataset, ipc=ipc, iterations=iterations, init=init,
                              param=param, out=out, seed=seed, device=device, data_root=data_root, compile=compile)
        return

    dev, group = _ranks(device, deterministic)
    writer = group is None or group.is_writer
    precision, compile = _speed(precision, compile, dev)
    bias = {"ratio": bias_ratio, "severity": severity} if bias_ratio is not None else None
    splits = _load(dataset, data_root, imbalance, seed, bias)
    overrides: dict[str, Any] = {
        "debias": debias, "debias_params": _parse_params(debias_param, "--debias-param"),
        "ipc": ipc, "iterations": iterations, "init": init, "model": model, "lr_schedule": lr_schedule,
        "seed": seed, "checkpoint_every": checkpoint_every, "checkpoint_seconds": 60 * checkpoint_minutes,
        "real_precision": precision, "compile": compile,
        "objective_params": _parse_params(param), "queue": _parse_params(queue, "--queue"),
    }
    if lr_img is not None:
        overrides["lr_img"] = lr_img
    if batch_real is not None:
        overrides["batch_real"] = batch_real
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
            real, prune_info = prune_pool(splits.train, splits.info, prune_ratio, prune_rule, teacher=prune_teacher,
                                          seed=seed, device=dev)
        except (ValueError, ArtifactError) as exc:
            _fail(str(exc))
    elif prune_teacher is not None:
        _fail("--prune-teacher scores the pruning: add --prune-ratio (and --prune-rule hyperbolic or "
              "hyperbolic-spread)")
    real, cached = _real_images(real, cache, group)
    evaluate = None
    if eval_every:
        from distillset.evaluate import EvalConfig, evaluate_synthetic

        quick = EvalConfig(model=model, epochs=eval_epochs, num_models=1, seed=seed, precision=precision,
                           compile=compile)

        def evaluate(synthetic):
            result = evaluate_synthetic(synthetic, splits.test, splits.info, quick, device=dev)
            return {"eval_accuracy": result.mean, "eval_epochs": eval_epochs}

    start = time.perf_counter()
    try:
        distillers = [Distiller(real, splits.info, config, out_dir=run_dir, device=dev, progress=writer,
                                evaluate=evaluate, evaluate_every=eval_every, group=group, cache_real=cached)
                      for config, run_dir in zip(configs, outs, strict=True)]
        sets = run_together(distillers, resume=resume)
    except KeyboardInterrupt:
        typer.echo(f"\ninterrupted: checkpoint saved in {out}; continue with the same command plus --resume", err=True)
        raise typer.Exit(code=130) from None
    except (CheckpointMismatchError, ArtifactError, FloatingPointError, ValueError, TypeError) as exc:
        _fail(str(exc))
    together = {"distilled_with": methods} if len(methods) > 1 else {}
    debias_teacher = debias_teacher_record(configs[0].debias, configs[0].debias_params)  # shared by the runs
    if group is not None:
        together["processes"] = group.world_size
    for name, run_dir, distiller, synthetic in zip(methods, outs, distillers, sets, strict=True):
        if not writer:
            continue
        save_run(run_dir, synthetic, method=name, dataset=dataset, ipc=ipc, seed=seed,
                 config=asdict(distiller.config), wall_seconds=distiller.elapsed,
                 extra={"kind": "distilled", "imbalance": imbalance, "prune": prune_info,
                        "session_seconds": round(time.perf_counter() - start, 3), **together,
                        **({"bias": bias} if bias is not None else {}),
                        **({"debias_teacher": debias_teacher} if debias_teacher else {}),
                        "runtime": runtime_record(dev, distiller.config.real_precision, distiller.config.compile)})
        typer.echo(f"saved {len(synthetic)} images to {run_dir}")


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run directory written by distill or coreset.")],
    model: Annotated[str, typer.Option(help="Architecture(s), comma-separated, e.g. convnet3,resnet18.")] = "convnet3",
    models: Models = None,
    epochs: Annotated[int, typer.Option(help="Training epochs (paper protocol: 1000).")] = 1000,
    precision: Precision = "auto",
    compile: Compile = None,
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
    soft_labels: Annotated[Optional[Path], typer.Option(
        "--soft-labels", metavar="TEACHER",
        help="Train on this teacher's soft labels of the images (a different protocol; docs/teachers.md).")] = None,
    temperature: Annotated[float, typer.Option(help="Soft-label temperature T: softmax(logits / T).")] = 1.0,
    relabel: Annotated[str, typer.Option(
        help="With --soft-labels: 'augmented' labels every augmented batch (FKD / SRe2L relabel, the decoupled "
             "methods' protocol); 'fixed' labels the un-augmented images once.")] = "augmented",
    require_signature: Annotated[bool, typer.Option(
        "--require-signature", help="Refuse the run unless a trusted key signed it (docs/security.md).")] = False,
    trusted_key: Annotated[Optional[list[Path]], typer.Option(
        help="Publisher's public key (repeatable); implies --require-signature. Default: $DISTILLSET_TRUSTED_KEYS.",
    )] = None,
    data_root: DataRoot = None,
    seed: Seed = 0,
    device: Device = "cpu",
    deterministic: Deterministic = False,
) -> None:
    """Train fresh networks on a run's set and test them on the real test split. Under torchrun the networks are
    split over the processes (docs/scale-out.md)."""
    from distillset.data import BiasedSplits
    from distillset.evaluate import EvalConfig, evaluate_biased, evaluate_synthetic
    from distillset.evaluate.elf import ELFConfig, evaluate_elf
    from distillset.evaluate.metrics import fair_metrics as compute_fair_metrics
    from distillset.evaluate.protocol import format_mean_std
    from distillset.evaluate.records import EvaluationRecords, evaluation_key

    synthetic, manifest = _open_run(run, _trusted_keys(require_signature, trusted_key))
    architectures = [name.strip() for name in model.split(",") if name.strip()]
    count = _count(models, 5)
    splits = _load(manifest["dataset"], data_root, manifest.get("imbalance"), manifest.get("seed", 0),
                   manifest.get("bias"))
    records = EvaluationRecords(run)
    dev, ranks = _ranks(device, deterministic)
    precision, compile = _speed(precision, compile, dev)
    if ranks is not None and (elf or isinstance(splits, BiasedSplits)):
        _fail("ELF and biased-data evaluations are not split over processes; run them without torchrun")
    labels_record, relabeller = None, None
    if soft_labels is not None:
        from distillset.training.teachers import soft_label_record, teacher_of, with_soft_labels

        if relabel not in ("augmented", "fixed"):
            _fail(f"--relabel must be 'augmented' or 'fixed' (got {relabel!r})")
        if relabel == "augmented" and (elf or isinstance(splits, BiasedSplits)):
            _fail("--relabel augmented is not available with ELF or biased-data evaluations; add --relabel fixed")
        try:
            teacher = teacher_of(soft_labels, splits.info, use="--soft-labels", device=dev)
            if relabel == "fixed":
                synthetic = with_soft_labels(synthetic, teacher, temperature)
            else:
                relabeller = teacher.relabel(temperature, precision)
        except (ArtifactError, ValueError) as exc:
            _fail(str(exc))
        labels_record = soft_label_record(teacher, synthetic.images, temperature, relabel)
        if labels_record["normalized_entropy"] > 0.9:
            typer.echo(f"warning: the teacher's labels of these images are nearly uniform (entropy "
                       f"{labels_record['normalized_entropy']:.2f} of the maximum); they carry little class "
                       "information: train the teacher longer or lower --temperature", err=True)
    try:
        elf_config = ELFConfig(**_parse_params(elf_param, "--elf-param")) if elf else None
    except (TypeError, ValueError) as exc:
        _fail(f"--elf-param: {exc}")
    full_accuracies = _full_data_accuracies(full_data_accuracy, architectures)

    bias_groups: dict[str, dict[str, Any]] = {}  # biased datasets: aligned / conflicting accuracy by architecture

    def run_evaluation(images, config, checkpoint_dir=None):
        if elf_config is None and isinstance(splits, BiasedSplits):
            biased = evaluate_biased(images, splits, config, device=dev, progress=True, checkpoint_dir=checkpoint_dir)
            bias_groups.setdefault(config.model, {k: v for k, v in biased.to_dict().items() if k != "test_split"})
            return biased.protocol
        if elf_config is None:
            return evaluate_synthetic(images, splits.test, splits.info, config, device=dev,
                                      progress=ranks is None or ranks.is_writer, checkpoint_dir=checkpoint_dir,
                                      group=ranks, relabel=relabeller)
        return evaluate_elf(images, splits, config, elf_config, device=dev, progress=True,
                            checkpoint_dir=checkpoint_dir)

    for arch in architectures:
        key = evaluation_key(arch, epochs, count, seed, elf=elf_config is not None, precision=precision, suffix=(
            f"soft-{teacher.manifest['sha256'][:8]}-T{temperature:g}{'-aug' if relabeller else ''}"
            if labels_record else ""))
        label = arch + (" +ELF" if elf_config else "") + (" soft" if labels_record else "")
        finished = records.get(key)
        if finished is not None and not fair_metrics:  # a finished evaluation is reported, not trained again
            typer.echo(f"{label:17s} {format_mean_std(finished['mean'], finished['std'])}  (n={count}, {epochs} "
                       f"epochs, final epoch; recorded in {RunDir(run).evaluation})")
            continue
        training = records.work_dir(key)  # tested models and the one in training: a rerun resumes
        try:
            config = EvalConfig(model=arch, epochs=epochs, num_models=count, precision=precision, seed=seed,
                                compile=compile)
            result = run_evaluation(synthetic, config, training)
            entry = result.to_dict()
            entry["labels"] = labels_record or {"labels": "hard"}
            if arch in bias_groups:
                entry["bias"] = bias_groups[arch]
            if fair_metrics:
                entry["fair_metrics"] = compute_fair_metrics(
                    synthetic, splits, config, evaluate=run_evaluation, synthetic_result=result,
                    full_accuracy=full_accuracies.get(arch), full_data_epochs=full_data_epochs, device=dev,
                ).to_dict()
        except (UnknownNameError, ValueError, FloatingPointError, CheckpointMismatchError, ArtifactError) as exc:
            _fail(str(exc))
        entry["runtime"] = runtime_record(dev, precision, compile)
        if ranks is not None:
            entry["processes"] = ranks.world_size
            if not ranks.is_writer:
                continue
        records.record(key, entry)
        typer.echo(f"{label:17s} {format_mean_std(result.mean, result.std)}  "
                   f"(n={count}, {epochs} epochs, final epoch)")
        if "bias" in entry:
            typer.echo(f"{'':17s} " + "  ".join(f"{group} {format_mean_std(v['mean'], v['std'])}"
                                                for group, v in entry["bias"].items() if isinstance(v, dict)))
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
    from distillset.evaluate.spectrum import compare_spectra, plot_ffc_spectra

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
    comparison = compare_spectra(
        splits, {name: (images, run_manifest.get("config", {})) for name, (_, images, run_manifest) in named.items()},
        model=model, trained_epochs=trained_epochs, real_per_class=real_per_class, per_class=per_class, seed=seed,
        device=_device(device))
    spectra, levels, network = comparison.panels, comparison.levels, comparison.network
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
    ipc: Annotated[
        Optional[int], typer.Option(help="Images per class (default: 10 on Fashion-MNIST, 1 on the digits).")
    ] = None,
    iterations: Annotated[int, typer.Option(help="DM iterations.")] = 200,
    epochs: Annotated[int, typer.Option(help="Evaluation epochs (paper protocol: 1000).")] = 300,
    models: Models = None,
    precision: Precision = "auto",
    compile: Compile = None,
    data_root: DataRoot = None,
    seed: Seed = 0,
    device: Device = "cpu",
) -> None:
    """The main job on an embedded default: distil with DM, compare with random real images, report.

    Uses Fashion-MNIST where it is installed, else the embedded scikit-learn digits; --models networks
    (default 2) are trained per set."""
    from distillset.data import available_datasets
    from distillset.report import run_demo

    dev = _device(device)
    precision, compile = _speed(precision, compile, dev)
    found = {name for name, ok, _ in available_datasets(data_root) if ok}
    dataset = "fashion-mnist" if "fashion-mnist" in found else "digits"
    typer.echo(f"demo dataset: {dataset} ({'Debian package' if dataset == 'fashion-mnist' else 'embedded fallback'})")
    splits = _load(dataset, data_root, None, seed)
    try:
        summary = run_demo(out, splits, ipc=ipc, iterations=iterations, epochs=epochs, num_models=_count(models, 2),
                           precision=precision, compile=compile, seed=seed, device=dev, echo=typer.echo)
    except (CheckpointMismatchError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(f"DM {summary['gain_points']:+.1f} points over random real images at IPC {summary['ipc']}; "
               f"{summary['wall_seconds']:.0f} s")
    typer.echo(f"report: {RunDir(out).report} (report.html, summary.json, dm.png, random.png beside it)")


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
    fmt: Annotated[
        str, typer.Option("--format", help="auto (detected from SOURCE), dm, ddranking or imagefolder.")
    ] = "auto",
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


def _distill_with_teacher(methods: list[str], teacher_path: Path | None, *, dataset: str, ipc: int, iterations: int,
                          init: str, param: list[str] | None, out: Path, seed: int, device: str,
                          data_root: Path | None, compile: bool | None) -> None:
    """``distill --method cfm-teacher|lowpass-teacher|highpass-teacher|dm-teacher --teacher T``: the decoupled
    pipeline (resumable: its checkpoint is out/<method>/checkpoint.safetensors; fp32, compiled unless
    ``--no-compile``)."""
    from distillset.engine.teacher_matching import TEACHER_METHODS, TeacherMatchingConfig, distill_with_teacher
    from distillset.training.teachers import load_teacher

    if teacher_path is None or not all(name in TEACHER_METHODS for name in methods):
        _fail(f"--teacher goes with the methods {', '.join(TEACHER_METHODS)} (and they need it); got --method "
              f"{','.join(methods)}{'' if teacher_path else ' without --teacher'}")
    dev = _device(device)
    compile = _compiles(compile)
    try:
        teacher = load_teacher(teacher_path, device=dev)
    except ArtifactError as exc:
        _fail(str(exc))
    if teacher.recipe.dataset != dataset:
        _fail(f"the teacher was trained on {teacher.recipe.dataset}, not {dataset}; pass --dataset "
              f"{teacher.recipe.dataset} or a teacher of {dataset}")
    splits = _load(dataset, data_root, None, seed)
    for name in methods:
        run_dir = out if len(methods) == 1 else out / name
        try:
            config = TeacherMatchingConfig(method=name, ipc=ipc, iterations=iterations, init=init, seed=seed,
                                           **_parse_params(param))
            if _finished_teacher_run(run_dir, config, teacher.manifest["sha256"]):
                typer.echo(f"{run_dir}: already distilled with these settings and this teacher; kept")
                continue
            synthetic, log = distill_with_teacher(splits.train, splits.info, teacher.net, config,
                                                  teacher_sha256=teacher.manifest["sha256"],
                                                  checkpoint=RunDir(run_dir).checkpoint, device=dev,
                                                  compile=compile, progress=True)
        except KeyboardInterrupt:
            typer.echo(f"\ninterrupted: checkpoint saved in {run_dir}; rerun the same command to continue", err=True)
            raise typer.Exit(code=130) from None
        except (TypeError, ValueError, FloatingPointError, CheckpointMismatchError, ArtifactError) as exc:
            _fail(str(exc))
        save_run(run_dir, synthetic, method=name, dataset=dataset, ipc=ipc, seed=seed, config=asdict(config),
                 wall_seconds=log["seconds"],
                 extra={"kind": "distilled", "final_log": log, "runtime": runtime_record(dev, "fp32", compile),
                        "teacher": {"path": str(teacher.path), "sha256": teacher.manifest["sha256"],
                                    "test_accuracy": teacher.test_accuracy}})
        typer.echo(f"saved {len(synthetic)} images to {run_dir}; evaluate with soft labels: distillset evaluate "
                   f"{run_dir} --soft-labels {teacher.path}")


def _finished_teacher_run(run_dir: Path, config: Any, teacher_sha256: str) -> bool:
    """Whether ``run_dir`` already holds the set of ``config`` made with this teacher (a rerun keeps it)."""
    manifest_path = RunDir(run_dir).manifest
    if not manifest_path.is_file():
        return False
    manifest = json.loads(manifest_path.read_text())
    return (json.loads(json.dumps(asdict(config))) == manifest.get("config")
            and manifest.get("teacher", {}).get("sha256") == teacher_sha256)


teacher_app = typer.Typer(help="Teachers: networks trained on a full training split (docs/teachers.md).",
                          no_args_is_help=True)
app.add_typer(teacher_app, name="teacher")
TeacherRoot = Annotated[Optional[Path], typer.Option(
    "--root", help="Teacher folder (default: $DISTILLSET_CACHE/teachers, i.e. ~/.cache/distillset/teachers).")]


@teacher_app.command("train")
def teacher_train(
    dataset: Annotated[str, typer.Option(help="Dataset name (see `distillset datasets`).")] = "fashion-mnist",
    model: Annotated[str, typer.Option(help="Network (docs/networks.md), e.g. convnet3, resnet18-in.")] = "convnet3",
    epochs: Annotated[int, typer.Option(help="Passes over the training split (lr x0.1 after half).")] = 20,
    dsa: Annotated[bool, typer.Option("--dsa/--no-dsa", help="DSA augmentation of every batch.")] = True,
    width: Annotated[Optional[int], typer.Option(help="Network width (ConvNet: channels), e.g. 512.")] = None,
    lr: Annotated[float, typer.Option(help="SGD learning rate.")] = 0.01,
    precision: Precision = "auto",
    compile: Compile = None,
    root: TeacherRoot = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Store the teacher in this folder instead of <root>/<recipe key>.")] = None,
    seed: Seed = 0,
    device: Device = "cpu",
    data_root: DataRoot = None,
) -> None:
    """Train a teacher on the whole training split (resumable: rerun the same command), or show the stored one."""
    from distillset.data.registry import DATASETS
    from distillset.training.teachers import make_recipe, train_teacher

    if dataset in DATASETS and DATASETS.get(dataset).bias:
        _fail(f"'{dataset}' is biased and a teacher's recipe does not record the bias ratio, so `teacher train` "
              "takes none: train a teacher of a biased set in Python, one folder per bias ratio (docs/biased.md)")
    dev = _device(device)
    precision, compile = _speed(precision, compile, dev)
    splits = _load(dataset, data_root, None, seed)
    try:
        recipe = make_recipe(splits, model, epochs=epochs, dsa=dsa, seed=seed, precision=precision, device=dev,
                             network_options={"width": width} if width is not None else None, lr=lr)
        teacher = train_teacher(splits, recipe, root=root, device=dev, progress=True, compile=compile, folder=out)
    except KeyboardInterrupt:
        typer.echo("\ninterrupted: rerun the same command to continue from the last checkpoint", err=True)
        raise typer.Exit(code=130) from None
    except (UnknownNameError, ValueError, TypeError, FloatingPointError, CheckpointMismatchError,
            ArtifactError) as exc:
        _fail(str(exc))
    typer.echo(f"teacher {teacher.path}: test accuracy {teacher.test_accuracy:.2f}% "
               f"({teacher.manifest['train_seconds']:.0f} s of training)")


@teacher_app.command("list")
def teacher_list(root: TeacherRoot = None) -> None:
    """The stored teachers (and trainings that have a checkpoint but no result yet)."""
    from distillset.training.teachers import list_teachers, teachers_in_training

    found = list_teachers(root)
    for manifest in found:
        recipe = manifest["recipe"]
        typer.echo(f"{manifest['path']}\n    {recipe['dataset']} {recipe['model']} {recipe['epochs']} epochs "
                   f"{'DSA' if recipe['dsa'] else 'no aug.'} {recipe['precision']}: "
                   f"{manifest['test_accuracy']:.2f}% ({manifest['train_seconds']:.0f} s)")
    for folder in teachers_in_training(root):
        typer.echo(f"{folder}\n    in training (resume with `distillset teacher train` and the same options)")
    if not found:
        typer.echo("no finished teachers; train one with `distillset teacher train --dataset D --model M`")


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
    threshold: Annotated[Optional[float], typer.Option(
        help="Score above which the set is flagged (default: the one calibrated for the run's dataset).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Also write the result as JSON here.")] = None,
) -> None:
    """Look for gradient-based poisoning (e.g. Dark Distillation) in a set from the set alone: its high-frequency
    footprint (docs/security.md). Exit code 0: nothing found, 3: flagged."""
    from distillset.security.scan import calibrated_threshold, scan_set

    synthetic, manifest = _open_run(run)
    try:
        result = scan_set(synthetic, calibrated_threshold(manifest["dataset"]) if threshold is None else threshold)
    except ValueError as exc:
        _fail(str(exc))
    if out is not None:
        atomic_write_json(out, {"run": str(run), **result.to_dict()})
    verdict = "FLAGGED: likely poisoned" if result.flagged else "no poisoning found"
    typer.echo(f"{verdict}: high-frequency score {result.score:.2f} (threshold {result.threshold}); per class: "
               + " ".join(f"{v:.2f}" for v in result.per_class))
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
    proxy_teacher: Annotated[Optional[Path], typer.Option(
        help="Teacher folder (same dataset) used as the attacker's proxy instead of a network trained on the set: "
             "an attacker holding a classifier of the task, still without raw data (docs/security.md).")] = None,
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
                                   progress=True, proxy_teacher=proxy_teacher)
    except (ValueError, ArtifactError) as exc:
        _fail(str(exc))
    save_run(out, result.poisoned, method=manifest["method"], dataset=manifest["dataset"], ipc=manifest["ipc"],
             seed=manifest["seed"], config=manifest.get("config", {}), wall_seconds=result.seconds,
             extra={"kind": "poisoned", "attack": {"name": "dark-distillation", **config.to_dict(),
                                                   **({"proxy_teacher": result.proxy_teacher}
                                                      if result.proxy_teacher else {})},
                    "source": {"run": str(run), "sha256": manifest["tensors"]["sha256"]}})
    typer.echo(f"poisoned set written to {out} in {result.seconds:.1f} s (target {target}, {trigger} trigger); "
               "for auditing defences only")


vlcp_app = typer.Typer(help="VLCP: a diffusion model draws each image from an image and a text prototype "
                            "(docs/vlcp.md; needs `pip install 'distillset[vlcp]'`).", no_args_is_help=True)
app.add_typer(vlcp_app, name="vlcp")
ModelDir = Annotated[Path, typer.Option("--model-dir", help="Diffusion model folder in diffusers layout (Stable "
                                                            "Diffusion v1-5, or one made with train-diffusion).")]
CaptionsFile = Annotated[Optional[Path], typer.Option("--captions", help="Captions JSONL (index, label, caption).")]
Dataset = Annotated[str, typer.Option(help="Dataset name (see `distillset datasets`).")]
Ipc = Annotated[int, typer.Option(help="Images per class (= k-means clusters per class).")]
Contamination = Annotated[float, typer.Option(help="LOF contamination alpha (0: no outlier removal).")]
Beta = Annotated[float, typer.Option(help="Words in at least this fraction of a class's captions are dropped.")]
TopK = Annotated[int, typer.Option(help="Top words per cluster that score the captions.")]
Faithful = Annotated[bool, typer.Option("--faithful-text", help="The authors' substring word matching.")]
Prompt = Annotated[str, typer.Option(help="prototype (VLCP), label (class name) or none (image prototypes only).")]
Strength = Annotated[float, typer.Option(help="img2img strength: fraction of the denoising steps run.")]
Guidance = Annotated[float, typer.Option(help="Classifier-free guidance scale.")]
Steps = Annotated[int, typer.Option(help="Denoising steps (at strength 1).")]
Negative = Annotated[str, typer.Option(help="Negative prompt ('' for none).")]


def _vlcp_config(**values: Any):
    from distillset.generative.vlcp import VLCPConfig

    try:
        return VLCPConfig(**values)
    except ValueError as exc:
        _fail(str(exc))


def _vlcp_errors() -> tuple[type[Exception], ...]:
    from distillset.data import DatasetNotFoundError

    return (FileNotFoundError, DatasetNotFoundError, ValueError, ImportError, CheckpointMismatchError, ArtifactError,
            FloatingPointError, UnknownNameError)


@vlcp_app.command("captions")
def vlcp_captions(
    out: Annotated[Path, typer.Option(help="Captions JSONL to write.")],
    dataset: Dataset = "fashion-mnist",
    source: Annotated[str, typer.Option(
        help="measured (class name + attributes measured from the pixels; a stand-in) or llava.")] = "measured",
    model_path: Annotated[Optional[Path], typer.Option(help="Local LLaVA checkpoint (transformers format).")] = None,
    data_root: DataRoot = None,
    device: Device = "cpu",
) -> None:
    """Caption every training image (stage 1)."""
    from distillset.generative.vlcp import caption_dataset

    try:
        path = caption_dataset(dataset, out, source=source, model_path=model_path, root=data_root, device=device)
    except _vlcp_errors() as exc:
        _fail(str(exc))
    typer.echo(f"captions: {path}")


@vlcp_app.command("train-diffusion")
def vlcp_train_diffusion(
    model_dir: ModelDir,
    captions: Annotated[Path, typer.Option("--captions", help="Captions JSONL (index, label, caption).")],
    dataset: Dataset = "fashion-mnist",
    init: Annotated[str, typer.Option(help="existing (fine-tune the model in --model-dir) or tiny (create a small "
                                           "model from scratch there if it has none).")] = "existing",
    vae_steps: Annotated[int, typer.Option(help="VAE training steps (tiny models only).")] = 0,
    unet_steps: Annotated[int, typer.Option(help="UNet training steps.")] = 2000,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 32,
    lr: Annotated[float, typer.Option(help="AdamW learning rate of the UNet (and text encoder).")] = 1e-4,
    train_text_encoder: Annotated[Optional[bool], typer.Option(
        "--train-text-encoder/--freeze-text-encoder", show_default="train for tiny, freeze for existing")] = None,
    image_size: Annotated[int, typer.Option(help="Tiny model: image size.")] = 32,
    vae_channels: Annotated[str, typer.Option(help="Tiny model: VAE widths (halvings: n-1).")] = "16,32,32",
    unet_channels: Annotated[str, typer.Option(help="Tiny model: UNet widths.")] = "32,64",
    text_width: Annotated[int, typer.Option(help="Tiny model: text encoder width.")] = 64,
    norm_groups: Annotated[int, typer.Option(help="Tiny model: group-norm groups.")] = 8,
    data_root: DataRoot = None,
    seed: Seed = 0,
) -> None:
    """Train a tiny latent-diffusion model, or fine-tune a local one, on the captioned training split (resumable:
    rerun the same command)."""
    from distillset.generative.diffusion import DiffusionTrainConfig, TinyModelConfig
    from distillset.generative.vlcp import train_on_dataset

    if init not in ("existing", "tiny"):
        _fail(f"--init must be existing or tiny, got {init!r}")
    try:
        tiny = TinyModelConfig(image_size=image_size, vae_channels=tuple(int(c) for c in vae_channels.split(",")),
                               unet_channels=tuple(int(c) for c in unet_channels.split(",")), text_width=text_width,
                               norm_groups=norm_groups) if init == "tiny" else None
        config = DiffusionTrainConfig(
            vae_steps=vae_steps if init == "tiny" else 0, unet_steps=unet_steps, batch_size=batch_size, lr=lr,
            train_text_encoder=init == "tiny" if train_text_encoder is None else train_text_encoder, seed=seed)
        record = train_on_dataset(dataset, model_dir, captions, config, tiny=tiny, root=data_root)
    except KeyboardInterrupt:
        typer.echo("\ninterrupted: rerun the same command to continue from the last checkpoint", err=True)
        raise typer.Exit(code=130) from None
    except _vlcp_errors() as exc:
        _fail(str(exc))
    typer.echo(f"model {model_dir}: {json.dumps(record.get('stages', {}))}")


@vlcp_app.command("prototypes")
def vlcp_prototypes(
    model_dir: ModelDir,
    out: Annotated[Path, typer.Option(help="Prototypes file (.safetensors) to write.")],
    captions: CaptionsFile = None,
    dataset: Dataset = "fashion-mnist",
    ipc: Ipc = 10,
    contamination: Contamination = 0.1,
    beta: Beta = 0.7,
    top_k: TopK = 30,
    faithful_text: Faithful = False,
    data_root: DataRoot = None,
    seed: Seed = 0,
    device: Device = "cpu",
) -> None:
    """Image prototypes (VAE latents, LOF, k-means) and text prototypes (Algorithm 2) of every class."""
    from distillset.data import load_dataset
    from distillset.generative.vlcp import prototypes_of_dataset

    config = _vlcp_config(ipc=ipc, contamination=contamination, beta=beta, top_k=top_k, faithful_text=faithful_text,
                          seed=seed, prompt="prototype" if captions else "none")
    try:
        prototypes = prototypes_of_dataset(load_dataset(dataset, data_root), model_dir, captions, out, config,
                                           device=device)
    except _vlcp_errors() as exc:
        _fail(str(exc))
    typer.echo(f"prototypes: {out} ({len(prototypes.texts)} images)")


@vlcp_app.command("synthesize")
def vlcp_synthesize(
    model_dir: ModelDir,
    prototypes: Annotated[Path, typer.Option(help="Prototypes file from `distillset vlcp prototypes`.")],
    out: Annotated[Path, typer.Option(help="Run directory to write.")],
    dataset: Dataset = "fashion-mnist",
    prompt: Prompt = "prototype",
    strength: Strength = 0.7,
    guidance: Guidance = 10.0,
    steps: Steps = 50,
    negative_prompt: Negative = "cartoon, anime, painting",
    data_root: DataRoot = None,
    seed: Seed = 0,
    device: Device = "cpu",
) -> None:
    """img2img from every prototype into a run directory that `distillset evaluate` reads."""
    from distillset.data import load_dataset
    from distillset.generative.diffusion import load_pipeline
    from distillset.generative.vlcp import Prototypes, save_vlcp_run

    try:
        loaded = Prototypes.load(prototypes)
        ipc = int(loaded.labels.bincount().max())
        config = _vlcp_config(ipc=ipc, prompt=prompt, strength=strength, guidance_scale=guidance, steps=steps,
                              negative_prompt=negative_prompt, seed=seed)
        info = load_dataset(dataset, data_root).info
        manifest = save_vlcp_run(load_pipeline(model_dir, device), loaded, info, dataset, model_dir, out, config)
    except _vlcp_errors() as exc:
        _fail(str(exc))
    typer.echo(f"run: {manifest.parent}")


@vlcp_app.command("run")
def vlcp_run(
    model_dir: ModelDir,
    out: Annotated[Path, typer.Option(help="Run directory to write (prototypes are kept there).")],
    captions: CaptionsFile = None,
    dataset: Dataset = "fashion-mnist",
    ipc: Ipc = 10,
    contamination: Contamination = 0.1,
    beta: Beta = 0.7,
    top_k: TopK = 30,
    faithful_text: Faithful = False,
    prompt: Prompt = "prototype",
    strength: Strength = 0.7,
    guidance: Guidance = 10.0,
    steps: Steps = 50,
    negative_prompt: Negative = "cartoon, anime, painting",
    data_root: DataRoot = None,
    seed: Seed = 0,
    device: Device = "cpu",
) -> None:
    """Prototypes and synthesis in one go (a rerun reuses the prototypes kept in the run directory)."""
    from distillset.generative.vlcp import distill_vlcp

    config = _vlcp_config(ipc=ipc, contamination=contamination, beta=beta, top_k=top_k, faithful_text=faithful_text,
                          prompt=prompt, strength=strength, guidance_scale=guidance, steps=steps,
                          negative_prompt=negative_prompt, seed=seed)
    try:
        manifest = distill_vlcp(dataset, model_dir, captions, out, config, root=data_root, device=device)
    except _vlcp_errors() as exc:
        _fail(str(exc))
    typer.echo(f"run: {manifest.parent}")

@app.command("evaluate-minimax")
def evaluate_minimax_command(
    run: Annotated[Path, typer.Argument(help="Run directory to evaluate.")],
    model: Annotated[str, typer.Option(help="Architecture(s), comma-separated (paper: convnet6,resnetap10,resnet18).")]
    = "convnet6,resnetap10,resnet18",
    models: Models = None,
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs (default: the reference's, by IPC).")] = None,
    image_size: Annotated[Optional[int], typer.Option(help="Train and test at this size (bilinear).")] = None,
    evaluations: Annotated[int, typer.Option(help="Test evaluations along the training (best is reported).")] = 100,
    data_root: DataRoot = None,
    seed: Seed = 0,
    device: Device = "cpu",
) -> None:
    """The Minimax protocol (hard labels, CutMix, best test accuracy over periodic evaluations; docs/vlcp.md)."""
    from distillset.evaluate.minimax import evaluate_minimax
    from distillset.evaluate.protocol import format_mean_std
    from distillset.evaluate.records import EvaluationRecords, evaluation_key
    from distillset.training.minimax import MinimaxConfig, minimax_epochs

    synthetic, manifest = _open_run(run)
    splits = _load(manifest["dataset"], data_root, manifest.get("imbalance"), manifest.get("seed", 0))
    records = EvaluationRecords(run)
    count = _count(models, 3)
    epochs = epochs or minimax_epochs(int(manifest["ipc"]), splits.info.num_classes)
    for arch in [name.strip() for name in model.split(",") if name.strip()]:
        try:
            config = MinimaxConfig(model=arch, epochs=epochs, num_models=count, image_size=image_size,
                                   evaluations=evaluations, seed=seed)
            entry = evaluate_minimax(synthetic, splits.test, splits.info, config, device=_device(device)).to_dict()
        except (UnknownNameError, ValueError, FloatingPointError) as exc:
            _fail(str(exc))
        records.record(evaluation_key(arch, epochs, count, seed, protocol="minimax",
                                      suffix=f"px{image_size}" if image_size else ""), entry)
        typer.echo(f"{arch:12s} best {format_mean_std(entry['mean'], entry['std'])}  final "
                   f"{format_mean_std(entry['final_mean'], entry['final_std'])}  (n={count}, {epochs} epochs)")


def main() -> None:
    apply_process_settings()
    try:
        app()
    except ArtifactError as exc:  # pragma: no cover - defensive, commands catch their own
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


__all__ = ["app", "main"]
