"""Per-class accuracy of the long-tailed table and its two target bars, from benchmarks/results/csdm_longtail.json.

    python benchmarks/longtail_figure.py            # docs/figures/csdm-longtail.png (+ .json)

One panel per imbalance ratio ρ (the balanced rows, reused from dm_fashion_mnist, as ρ = 1): accuracy per class
in the long-tailed builder's order (class 0 keeps the most training images, the last class the fewest), one line
per method. A last panel: mean accuracy against ρ. Printed (and in the .json): CSDM − DM at each ρ, and each
method's drop from ρ = 0.1 to the smallest ρ, the two targets (CSDM beats DM at every ρ; CSDM's drop is at
most half of DM's).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common import RESULTS, ROOT  # noqa: E402
from figures import raw  # noqa: E402

FIGURE = ROOT.parent / "docs" / "figures" / "csdm-longtail.png"
BALANCED = 1.0  # the balanced dataset's rows, drawn as imbalance ratio 1


def rows_by_ratio(rows: list[dict]) -> dict[float, dict[str, dict]]:
    """{ρ: {method: row}} of the table's rows with per-class accuracies (ρ = 1 for the balanced rows)."""
    table: dict[float, dict[str, dict]] = {}
    for row in rows:
        ratio = row["extra"].get("imbalance") or BALANCED
        table.setdefault(float(ratio), {})[row["method"]] = row
    return dict(sorted(table.items(), reverse=True))


def bars(table: dict[float, dict[str, dict]]) -> dict[str, object]:
    """CSDM − DM (points) at each ρ where both exist, and each method's drop from ρ = 0.1 to the smallest ρ."""
    gaps = {ratio: round(raw(rows["csdm"])[0] - raw(rows["dm"])[0], 2)
            for ratio, rows in table.items() if "csdm" in rows and "dm" in rows}
    imbalanced = [ratio for ratio in table if ratio < BALANCED]
    drops = {}
    if 0.1 in table and len(imbalanced) > 1:
        smallest = min(imbalanced)
        drops = {method: round(raw(table[0.1][method])[0] - raw(table[smallest][method])[0], 2)
                 for method in table[0.1] if method in table[smallest]}
    return {"csdm_minus_dm": gaps, "drop_from_0.1_to_smallest": drops}


def plot(table: dict[float, dict[str, dict]], path: Path) -> None:
    methods = sorted({method for rows in table.values() for method in rows})
    colour = {method: f"C{index}" for index, method in enumerate(methods)}  # the same colour in every panel
    fig, axes = plt.subplots(1, len(table) + 1, figsize=(4 * (len(table) + 1), 3.6), squeeze=False)
    for ax, (ratio, rows) in zip(axes[0], table.items(), strict=False):
        for method in methods:
            if method in rows:
                per_class = rows[method]["extra"]["per_class"]
                ax.plot(range(len(per_class)), per_class, marker="o", ms=3, color=colour[method], label=method)
        ax.set_title("balanced" if ratio == BALANCED else f"ρ = {ratio:g}")
        ax.set_xlabel("class (most → fewest training images)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    summary = axes[0][-1]
    for method in methods:
        points = [(ratio, rows[method]) for ratio, rows in table.items() if method in rows]
        summary.errorbar([r for r, _ in points], [row["mean"] for _, row in points],
                         yerr=[row["std"] for _, row in points], marker="o", ms=3, capsize=2, color=colour[method],
                         label=method)
    summary.set_xscale("log")
    summary.set_xlabel("imbalance ratio ρ (1 = balanced)")
    summary.set_ylabel("mean test accuracy (%)")
    summary.set_title("mean ± std over 5 models")
    summary.grid(alpha=0.3)
    summary.legend(fontsize=8)
    fig.suptitle("Fashion-MNIST-LT, IPC 10, ConvNet-3 (benchmarks/results/csdm_longtail.json)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS / "csdm_longtail.json")
    parser.add_argument("--out", type=Path, default=FIGURE)
    args = parser.parse_args()
    table = rows_by_ratio(json.loads(args.results.read_text())["rows"])
    plot(table, args.out)
    summary = bars(table)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"source": str(args.results.relative_to(ROOT.parent)) if args.results.is_relative_to(ROOT.parent)
         else str(args.results), **{k: {str(r): v for r, v in d.items()} for k, d in summary.items()}},
        indent=1) + "\n")
    print(json.dumps(summary))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
