"""Which embedding lets the KDE weights find the bias-conflicting images (docs/biased.md, "Which embedding").

    python benchmarks/biased_kde_weights.py [--dataset digits|fashion-mnist] [--rho 0.9]

The real set is coloured with rho (colour bias, severity 2); for each embedding network and bandwidth scale the row
is the share of the total KDE weight on the bias-conflicting images (their share of the images is 1 - rho; with
every colour cluster weighted equally it would be 0.9). No distillation, no training except ``trained``.
"""

from __future__ import annotations

import argparse
import time

import torch

from common import command_line, markdown_table, write_results
from distillset.data import load_dataset
from distillset.data.base import DatasetInfo, ImageSet
from distillset.data.biased import make_biased_arrays
from distillset.engine.debias import KDEWeighting, embed_images, embedding_network, kde_weights

NAME = "biased_kde_weights"
EMBEDDINGS = {"random, no norm (default)": ("random", "none"), "random, instance norm (DM's network)":
              ("random", "instancenorm"), "trained, 3 epochs": ("trained", "none")}
SCALES = (0.2, 0.3, 0.5, 1.0)


def coloured(dataset: str, rho: float) -> tuple[ImageSet, torch.Tensor, DatasetInfo]:
    """The dataset's training split with a colour bias, and a mask of its bias-conflicting images."""
    if dataset == "fashion-mnist":
        splits = load_dataset("fashion-mnist-colour", bias_ratio=rho, severity=2)
        return splits.train, ~splits.aligned_mask("train"), splits.info
    base = load_dataset(dataset)
    raw = (base.info.denormalize(base.train.images) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    labels = base.train.labels.numpy()
    arrays = make_biased_arrays("colour", raw, labels, raw[:1], labels[:1], rho, severity=2)
    info = DatasetInfo(f"{dataset}-colour", 3, base.info.image_size, base.info.num_classes, (0.2,) * 3, (0.3,) * 3)
    images = info.normalize(torch.from_numpy(arrays.train_images).float() / 255)
    return ImageSet(images, base.train.labels), torch.from_numpy(arrays.train_attributes) != base.train.labels, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--rho", type=float, default=0.9)
    args = parser.parse_args()
    start = time.perf_counter()
    real, conflicting, info = coloured(args.dataset, args.rho)
    rows, table = [], []
    for label, (embedding, norm) in EMBEDDINGS.items():
        settings = KDEWeighting(embedding=embedding, norm=norm)
        net = embedding_network(real, info, settings, "convnet3", 0, torch.device("cpu"), "fp32")
        features = embed_images(net, real.images, torch.device("cpu"), "fp32")
        shares = {}
        for scale in SCALES:
            weights = kde_weights(features, real.labels, info.num_classes, bandwidth_scale=scale)
            shares[scale] = round(float(weights[conflicting].sum() / weights.sum()), 3)
            rows.append({"dataset": f"{args.dataset}-colour", "method": f"kde {label}", "ipc": 0, "model": "convnet3",
                         "metric": "conflicting_weight_share", "mean": shares[scale], "std": 0.0, "n": 1,
                         "iterations": 0, "epochs": settings.feature_epochs if embedding == "trained" else 0,
                         "extra": {"rho": args.rho, "severity": 2, "bandwidth_scale": scale, "embedding": embedding,
                                   "norm": norm, "conflicting_image_share": round(float(conflicting.float().mean()),
                                                                                  3)}})
        table.append({"embedding": label, **{f"scale {s}": v for s, v in shares.items()}})
    markdown = (f"Share of the KDE weight on the bias-conflicting images of {args.dataset} coloured with rho = "
                f"{args.rho} (their share of the images: {float(conflicting.float().mean()):.3f}; all colours weighted "
                "equally: 0.9).\n\n" + markdown_table(table, list(table[0])))
    write_results(NAME, command_line(), rows, [], time.perf_counter() - start, markdown)


if __name__ == "__main__":
    main()
