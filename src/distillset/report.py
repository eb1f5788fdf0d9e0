"""A self-contained HTML report comparing run directories (``distillset report runs/a runs/b --out r.html``).

One page, no external resources: figures are base64 PNGs in ``data:`` URIs and the style sheet is inline.
Per run it shows the synthetic image grid, the loss / quick-evaluation curves of ``log.jsonl``, per-class
accuracy bars and the manifest; across runs, the accuracy table (runs x evaluation settings, mean ± std
over the trained models, final epoch unless an entry says otherwise) and the fair metrics where present.
:func:`run_demo` is ``distillset demo``: DM against random real images on the default dataset, with a report.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from distillset.artifacts import load_run, save_run
from distillset.coreset import select_coreset
from distillset.data import dataset_info
from distillset.data.base import DatasetInfo, DatasetSplits, ImageSet
from distillset.engine import Distiller, config_for_method
from distillset.evaluate import EvalConfig, EvalResult, evaluate_synthetic
from distillset.evaluate.protocol import format_mean_std
from distillset.evaluate.records import EvaluationRecords
from distillset.io import RunDir, atomic_write_bytes, atomic_write_json
from distillset.runtime import default_compile, runtime_record
from distillset.visualize import image_grid, save_image_grid

GRID_IMAGES_PER_CLASS = 10
GRID_MIN_WIDTH_PX = 320

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } .caption { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 1em 0; } th, td { border: 1px solid #ccc; padding: 4px 8px; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
section.run { border-top: 2px solid #ddd; margin-top: 2em; padding-top: 1em; }
img.grid { image-rendering: pixelated; border: 1px solid #ccc; }
img.figure { max-width: 100%; } pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 12px; }
.figures { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
"""


@dataclass
class RunRecord:
    """Everything the report shows about one run directory."""

    path: Path
    manifest: dict[str, Any]
    synthetic: ImageSet
    info: DatasetInfo
    log: list[dict[str, Any]] = field(default_factory=list)
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.manifest.get('method', '?')} ({self.path.name})"


def read_log(path: Path) -> list[dict[str, Any]]:
    """Records of a ``log.jsonl`` (a line cut off by an interrupted write is skipped)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "iteration" in record:
            records.append(record)
    return records


def load_record(run_dir: str | Path) -> RunRecord:
    """Load a run (verifying its hash), its log and its evaluations."""
    path = Path(run_dir)
    synthetic, manifest = load_run(path)
    info = dataset_info(manifest["dataset"])
    return RunRecord(path, manifest, synthetic, info, read_log(RunDir(path).log), EvaluationRecords(path).entries)


def evaluation_label(entry: dict[str, Any]) -> str:
    """Column name of an evaluation entry: architecture, ELF or not, epochs, reported epoch if not final."""
    config = entry.get("config", {})
    label = str(config.get("model", "?"))
    if config.get("elf"):
        label += " + ELF"
    if "epochs" in config:
        label += f" ({config['epochs']} ep)"
    reported = entry.get("accuracy_reported", "final_epoch")
    return label if reported == "final_epoch" else f"{label} [{reported}]"


def labelled_evaluations(record: RunRecord) -> dict[str, dict[str, Any]]:
    """The run's evaluation entries by column label (the entry key is appended on a clash)."""
    labelled: dict[str, dict[str, Any]] = {}
    for key, entry in record.evaluations.items():
        label = evaluation_label(entry)
        labelled[f"{label} [{key}]" if label in labelled else label] = entry
    return labelled


# --------------------------------------------------------------------------- figures


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def grid_png(record: RunRecord) -> tuple[bytes, int]:
    """PNG of the first images of every class (one row per class) and a display width in pixels."""
    per_class = min(GRID_IMAGES_PER_CLASS, int(record.synthetic.labels.bincount().max()))
    grid = image_grid(record.synthetic, record.info, per_class).numpy()
    pixels = (np.clip(grid, 0.0, 1.0) * 255).round().astype(np.uint8)
    image = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    scale = max(1, -(-GRID_MIN_WIDTH_PX // image.width))
    return buffer.getvalue(), image.width * scale


def curves_png(log: list[dict[str, Any]]) -> bytes | None:
    """Distillation loss and quick-evaluation accuracy against the iteration, or None without a log."""
    losses = [(r["iteration"], r["loss"]) for r in log if isinstance(r.get("loss"), (int, float))]
    accuracies = [(r["iteration"], r["eval_accuracy"]) for r in log if isinstance(r.get("eval_accuracy"), (int, float))]
    if not losses and not accuracies:
        return None
    panels = [p for p in ((losses, "loss"), (accuracies, "quick-evaluation accuracy (%)")) if p[0]]
    fig = Figure(figsize=(4.2 * len(panels), 3.0), layout="constrained")
    for ax, (points, name) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        iterations, values = zip(*points)
        ax.plot(iterations, values, marker="o" if len(points) < 30 else None, markersize=3)
        ax.set_xlabel("iteration")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    return _figure_png(fig)


def per_class_png(record: RunRecord) -> bytes | None:
    """Grouped bars: per-class test accuracy of every evaluation entry of the run."""
    entries = {label: e["per_class"] for label, e in labelled_evaluations(record).items() if e.get("per_class")}
    if not entries:
        return None
    num_classes = max(len(v) for v in entries.values())
    names = list(record.info.class_names)[:num_classes] or [str(c) for c in range(num_classes)]
    fig = Figure(figsize=(max(5.0, 0.5 * num_classes + 2.5), 3.2), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(entries)
    positions = np.arange(num_classes)
    for index, (label, values) in enumerate(entries.items()):
        ax.bar(positions + (index - (len(entries) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(positions, names, rotation=45 if num_classes > 5 else 0, ha="right" if num_classes > 5 else "center")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(3, len(entries)), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _figure_png(fig)


# --------------------------------------------------------------------------- HTML


def _img(png: bytes, alt: str, css_class: str, width: int | None = None) -> str:
    size = f' width="{width}"' if width else ""
    return f'<img class="{css_class}" alt="{html.escape(alt)}"{size} src="{png_data_uri(png)}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="num">{html.escape(c)}</td>' if i >= numeric_from else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(row)
        ) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def accuracy_table(records: Sequence[RunRecord]) -> str:
    """Runs x evaluation settings, mean ± std (n models)."""
    per_run = [labelled_evaluations(r) for r in records]
    columns = list(dict.fromkeys(label for entries in per_run for label in entries))
    if not columns:
        return "<p>No evaluation.json in these runs (run <code>distillset evaluate RUN</code>).</p>"
    rows = []
    for record, entries in zip(records, per_run):
        cells = []
        for column in columns:
            entry = entries.get(column)
            if entry is None:
                cells.append("")
            else:
                cells.append(f"{format_mean_std(entry['mean'], entry['std'])} (n={entry.get('n', '?')})")
        rows.append([record.label, str(record.manifest.get("ipc", "?")), *cells])
    return _table(["run", "IPC", *columns], rows, numeric_from=1)


def fair_metrics_table(records: Sequence[RunRecord]) -> str:
    """IOR / HLR / LRS rows for the evaluation entries that carry ``fair_metrics``."""
    rows = []
    for record in records:
        for label, entry in labelled_evaluations(record).items():
            fair = entry.get("fair_metrics")
            if not fair:
                continue
            rows.append([
                record.label, label,
                format_mean_std(fair["accuracy_mean"], fair["accuracy_std"]),
                format_mean_std(fair["random_accuracy_mean"], fair["random_accuracy_std"]),
                format_mean_std(fair["ior_mean"], fair["ior_std"]),
                f"{fair['full_data_accuracy']:.1f}",
                format_mean_std(fair["hlr_mean"], fair["hlr_std"]),
                format_mean_std(fair["lrs_mean"], fair["lrs_std"]),
            ])
    if not rows:
        return ""
    header = ["run", "evaluation", "accuracy", "random subset", "IOR", "full data", "HLR", "LRS (w=0.5)"]
    return ("<h2>Fair metrics</h2><p>IOR = gain over a class-balanced random real subset of the same size; "
            "HLR = gap to training on the full real data; LRS in [0, 100] combines them "
            "(docs/evaluation.md).</p>" + _table(header, rows, numeric_from=2))


def run_section(record: RunRecord) -> str:
    grid, width = grid_png(record)
    counts = record.synthetic.class_counts(record.info.num_classes).tolist() if record.info.num_classes else []
    parts = [
        f'<section class="run"><h2>{html.escape(record.label)}</h2>',
        f"<p>{html.escape(str(record.path))}: {len(record.synthetic)} images of {html.escape(record.info.name)}"
        f"{', per class ' + html.escape(str(counts)) if counts else ''}.</p>",
        '<div class="figures"><figure>',
        _img(grid, f"synthetic images of {record.label}", "grid", width),
        f"<figcaption>First {GRID_IMAGES_PER_CLASS} images of each class, one row per class.</figcaption></figure>",
    ]
    curves = curves_png(record.log)
    if curves is not None:
        parts.append(f'<figure>{_img(curves, f"training curves of {record.label}", "figure")}'
                     "<figcaption>log.jsonl: distillation loss and quick evaluations.</figcaption></figure>")
    bars = per_class_png(record)
    if bars is not None:
        parts.append(f'<figure>{_img(bars, f"per-class accuracy of {record.label}", "figure")}'
                     "<figcaption>Per-class test accuracy, mean over models.</figcaption></figure>")
    parts.append("</div>")
    if curves is None:
        parts.append("<p>No training log (log.jsonl) in this run.</p>")
    manifest = html.escape(json.dumps(record.manifest, indent=2, sort_keys=True, default=str))
    parts.append(f"<details><summary>manifest.json</summary><pre>{manifest}</pre></details></section>")
    return "\n".join(parts)


def render_report(records: Sequence[RunRecord], *, title: str = "distillset report", caption: str = "") -> str:
    """The report page as an HTML string."""
    if not records:
        raise ValueError("a report needs at least one run directory")
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="caption">{html.escape(caption)}</p>' if caption else "",
        "<h2>Accuracy (%)</h2>",
        "<p>Test accuracy of networks trained on each set, mean ± population std over the trained models; "
        "final-epoch accuracy unless the column says otherwise.</p>",
        accuracy_table(records),
        fair_metrics_table(records),
        *(run_section(r) for r in records),
    ]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def build_report(
    run_dirs: Sequence[str | Path], out: str | Path, *, title: str = "distillset report", caption: str = ""
) -> Path:
    """Write the report of ``run_dirs`` to ``out`` (atomically); returns its path."""
    records = [load_record(d) for d in run_dirs]
    out = Path(out)
    atomic_write_bytes(out, render_report(records, title=title, caption=caption).encode("utf-8"))
    return out


# --------------------------------------------------------------------------- demo

DEMO_IPC = {"fashion-mnist": 10, "digits": 1}
"""The demo's images per class. On the embedded digits (8x8 images) ten random real images per class already
train a network about as well as ten distilled ones, so the demo shows nothing there; with one image per class
a random pick is a poor summary of its class and distillation's point is visible."""


def run_demo(
    out: str | Path,
    splits: DatasetSplits,
    *,
    ipc: int | None = None,
    iterations: int = 200,
    epochs: int = 300,
    num_models: int = 2,
    precision: str = "auto",
    compile: bool | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Distil ``splits`` with DM, train networks on it and on random real subsets of the same size, and write
    ``out/report.md`` (what the numbers mean), ``report.html``, ``summary.json``, image grids and the two runs
    (``out/dm`` resumes when rerun). The random baseline draws a new subset for every network, so its spread
    includes the luck of the draw. Returns the summary."""
    out, device, info = Path(out), torch.device(device), splits.info
    ipc = DEMO_IPC.get(info.name, 10) if ipc is None else ipc
    compile = default_compile() if compile is None else compile
    start = time.perf_counter()
    config = config_for_method("dm", ipc=ipc, iterations=iterations, seed=seed, real_precision=precision,
                               compile=compile)
    distiller = Distiller(splits.train, info, config, out_dir=out / "dm", device=device, progress=True)
    sets = {"dm": distiller.run(resume=True)}
    runtime = runtime_record(device, distiller.config.real_precision, compile)
    save_run(out / "dm", sets["dm"], method="dm", dataset=info.name, ipc=ipc, seed=seed,
             config=asdict(distiller.config), wall_seconds=distiller.elapsed,
             extra={"kind": "distilled", "runtime": runtime})
    distilled_at = time.perf_counter()
    eval_config = EvalConfig(epochs=epochs, num_models=num_models, seed=seed, precision=precision, compile=compile)
    results = {"dm": evaluate_synthetic(sets["dm"], splits.test, info, eval_config, device=device, progress=True)}
    draws = [select_coreset(splits, "random", ipc, seed=seed + i) for i in range(num_models)]
    sets["random"] = draws[0]
    save_run(out / "random", draws[0], method="random", dataset=info.name, ipc=ipc, seed=seed,
             config={"method": "random", "draw_seeds": [seed + i for i in range(num_models)]}, wall_seconds=0.0,
             extra={"kind": "coreset"})
    per_draw = [evaluate_synthetic(draw, splits.test, info, replace(eval_config, num_models=1, seed=seed + i),
                                   device=device, progress=True) for i, draw in enumerate(draws)]
    results["random"] = EvalResult(config={**per_draw[0].config, "num_models": num_models, "new_draw_per_model": True},
                                   models=[model for result in per_draw for model in result.models])
    for name, result in results.items():
        atomic_write_json(RunDir(out / name).evaluation, {f"demo-e{epochs}-n{num_models}": result.to_dict()})
        save_image_grid(sets[name], info, out / f"{name}.png")
        echo(f"{name:8s} {format_mean_std(result.mean, result.std)}")
    summary: dict[str, Any] = {
        "dataset": info.name, "ipc": ipc, "iterations": iterations, "evaluation": results["dm"].config,
        **{name: result.to_dict() for name, result in results.items()},
        "gain_points": results["dm"].mean - results["random"].mean, "runtime": runtime,
        "seconds": {"distill": round(distilled_at - start, 1),
                    "evaluate": round(time.perf_counter() - distilled_at, 1)},
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    atomic_write_json(RunDir(out).summary, summary)
    RunDir(out).report.write_text(demo_markdown(summary, len(splits.test)))
    build_report([out / "dm", out / "random"], out / "report.html", title=f"distillset demo: {info.name}, IPC {ipc}",
                 caption=f"DM {iterations} iterations vs random real images; {num_models} networks per set.")
    return summary


def demo_markdown(summary: dict[str, Any], test_size: int) -> str:
    """The demo's report: the two accuracies and what they mean."""
    ipc, dm, random = summary["ipc"], summary["dm"], summary["random"]
    config, runtime = summary["evaluation"], summary["runtime"]
    classes = len(dm["per_class"])
    lines = [
        f"# distillset demo: {summary['dataset']}, IPC {ipc}", "",
        "| set | test accuracy (%) | networks |", "|---|---|---|",
        f"| dm: {ipc} synthetic image(s) per class, distilled | {format_mean_std(dm['mean'], dm['std'])} | {dm['n']} |",
        f"| random: {ipc} real image(s) per class, a new draw per network | "
        f"{format_mean_std(random['mean'], random['std'])} | {random['n']} |", "",
        "## What the numbers mean", "",
        f"Each number is the accuracy on the {test_size} real test images of a ConvNet-3 trained from scratch on "
        f"only {ipc * classes} images ({ipc} per class) for {config['epochs']} epochs (final epoch), mean ± std "
        "over the networks.",
        f"`random` is the baseline: real training images picked at random. `dm` is a set of the same size learned "
        f"by Distribution Matching in {summary['iterations']} iterations (starting from real images). Distillation "
        f"{'gained' if summary['gain_points'] >= 0 else 'lost'} {abs(summary['gain_points']):.1f} points here: "
        "that difference is what the method buys at this size.",
    ]
    if summary["dataset"] == "digits":
        lines.append("This ran on the embedded scikit-learn digits (no Fashion-MNIST found): with 10 images per "
                     "class random digits already train about as well as distilled ones, so the demo uses "
                     f"IPC {ipc}, where a random image is a poor summary of its class.")
    lines += [
        "A short run: the paper protocol distils 2000 iterations and trains 5 networks for 1000 epochs "
        "(`distillset distill` and `distillset evaluate` defaults; README, Results, has those numbers).", "",
        f"Ran with {runtime['precision']} ({'compiled' if runtime['compile'] else 'eager'}, "
        f"{runtime['threads']} threads); distillation {summary['seconds']['distill']:.0f} s, evaluation "
        f"{summary['seconds']['evaluate']:.0f} s.", "",
        "![dm](dm.png) ![random](random.png)", "",
    ]
    return "\n".join(lines)
