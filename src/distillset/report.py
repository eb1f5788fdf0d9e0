"""A self-contained HTML report comparing run directories (``distillset report runs/a runs/b --out r.html``).

One page, no external resources: figures are base64 PNGs in ``data:`` URIs and the style sheet is inline.
Per run it shows the synthetic image grid, the loss / quick-evaluation curves of ``log.jsonl``, per-class
accuracy bars and the manifest; across runs, the accuracy table (runs x evaluation settings, mean ± std
over the trained models, final epoch unless an entry says otherwise) and the fair metrics where present.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from distillset.artifacts import load_run
from distillset.data import dataset_info
from distillset.data.base import DatasetInfo, ImageSet
from distillset.evaluate.protocol import format_mean_std
from distillset.io import RunDir, atomic_write_bytes
from distillset.visualize import image_grid

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
    evaluation_path = RunDir(path).evaluation
    evaluations = json.loads(evaluation_path.read_text()) if evaluation_path.is_file() else {}
    if not isinstance(evaluations, dict):
        raise ValueError(f"{evaluation_path} must hold a JSON object of evaluation entries")
    info = dataset_info(manifest["dataset"])
    return RunRecord(path, manifest, synthetic, info, read_log(RunDir(path).log), evaluations)


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
