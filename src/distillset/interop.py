"""Exchange synthetic sets with other tools (docs/evaluation.md, "Interoperability").

Export a run directory to

* DD-Ranking's tensor layout: ``images.pt`` (float ``(N, C, H, W)``, the run's normalised pixels,
  unchanged) and ``labels.pt`` (soft labels ``(N, K)`` if the set has them, else hard labels ``(N,)``;
  a soft-labelled set also gets ``hard_labels.pt``, its class labels, which need not be the argmax of
  the soft ones), plus ``export.json`` with the normalisation constants and class names;
* an image folder, ``<out>/<class index>_<class name>/<i>.png``: 8-bit PNGs of the de-normalised
  pixels clipped to [0, 1] (lossy). Zero-padded index prefixes make the sorted folder order the label
  order, so ``torchvision.datasets.ImageFolder`` and DD-Ranking's ``image_path`` mode read the same labels.

Import into a normal run directory (:func:`distillset.artifacts.save_run`):

* the DC/DSA/DM reference result file, ``torch.save({'data': [[images, labels], ...], ...})``,
  one ``[images, labels]`` pair per experiment;
* DD-Ranking's tensor layout (``labels.pt`` optional: class-major order with N / K images per class;
  soft ``labels.pt`` take their class labels from ``hard_labels.pt`` if present, else the argmax);
* an image folder (class = the leading integer of the folder name, else the sorted folder position).

Tensor files are read with ``torch.load(weights_only=True)``: a file that needs arbitrary unpickling
is refused.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from distillset.artifacts import load_run, save_run
from distillset.data import dataset_info
from distillset.data.base import DatasetInfo, ImageSet
from distillset.data.formats import IMAGE_SUFFIXES, list_images
from distillset.io import atomic_write_json, sha256_file

ExportFormat = Literal["ddranking", "imagefolder"]
ImportFormat = Literal["dm", "ddranking", "imagefolder"]
EXPORT_FORMATS: tuple[str, ...] = ("ddranking", "imagefolder")
IMPORT_FORMATS: tuple[str, ...] = ("dm", "ddranking", "imagefolder")
DDRANKING_IMAGES = "images.pt"
DDRANKING_LABELS = "labels.pt"
HARD_LABELS = "hard_labels.pt"
EXPORT_INFO = "export.json"


class InteropError(ValueError):
    """A file to import is missing, unsafe or does not match the dataset."""


# --------------------------------------------------------------------------- export


def export_run(run_dir: str | Path, out_dir: str | Path, fmt: ExportFormat = "ddranking") -> Path:
    """Write the run's set to ``out_dir`` in ``fmt``; returns ``out_dir``."""
    synthetic, manifest = load_run(run_dir)
    info = dataset_info(manifest["dataset"])
    out = Path(out_dir)
    if fmt == "ddranking":
        export_ddranking(synthetic, out)
    elif fmt == "imagefolder":
        export_image_folder(synthetic, info, out)
    else:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    atomic_write_json(out / EXPORT_INFO, {
        "format": fmt,
        "source_run": str(Path(run_dir)),
        "source_sha256": manifest["tensors"]["sha256"],
        "method": manifest.get("method"),
        "dataset": info.name,
        "normalization": {"mean": list(info.mean), "std": list(info.std)},
        "class_names": list(info.class_names),
        "labels": "soft" if synthetic.soft_labels is not None else "hard",
        "pixels": "normalised, exact" if fmt == "ddranking" else "de-normalised, clipped to [0, 1], 8-bit PNG",
    })
    return out


def export_ddranking(synthetic: ImageSet, out_dir: Path) -> None:
    """``images.pt`` and ``labels.pt`` (soft labels when present, else hard) [+ ``hard_labels.pt``]."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(synthetic.images.float().contiguous(), out_dir / DDRANKING_IMAGES)
    if synthetic.soft_labels is None:
        torch.save(synthetic.labels.long().contiguous(), out_dir / DDRANKING_LABELS)
    else:
        torch.save(synthetic.soft_labels.float().contiguous(), out_dir / DDRANKING_LABELS)
        torch.save(synthetic.labels.long().contiguous(), out_dir / HARD_LABELS)


def class_folder_names(info: DatasetInfo) -> list[str]:
    """``<zero-padded index>_<class name>`` (file-system safe), sorting in label order."""
    digits = len(str(max(info.num_classes - 1, 0)))
    names = list(info.class_names) if len(info.class_names) == info.num_classes else [""] * info.num_classes
    return [f"{index:0{digits}d}" + (f"_{_safe(name)}" if _safe(name) else "") for index, name in enumerate(names)]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", name).strip("-")


def export_image_folder(synthetic: ImageSet, info: DatasetInfo, out_dir: Path) -> None:
    """One PNG per image under its class folder (hard labels; lossy, see the module docstring)."""
    from PIL import Image

    folders = class_folder_names(info)
    pixels = (info.denormalize(synthetic.images.float()).clamp(0, 1) * 255).round().to(torch.uint8)
    counters = [0] * info.num_classes
    for image, label in zip(pixels, synthetic.labels.tolist()):
        folder = out_dir / folders[label]
        folder.mkdir(parents=True, exist_ok=True)
        array = image.permute(1, 2, 0).numpy()
        Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).save(folder / f"{counters[label]:05d}.png")
        counters[label] += 1


# --------------------------------------------------------------------------- import


def load_tensor_file(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with errors that say what to do."""
    path = Path(path)
    if not path.is_file():
        raise InteropError(f"{path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InteropError(
            f"{path} was refused by torch.load(weights_only=True): it holds Python objects other than tensors, "
            f"numbers, strings and containers ({exc}). Re-save it as plain tensors (torch.save(tensor, ...))."
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise InteropError(f"{path} is not a readable torch file ({exc})") from exc


def _tensor(value: Any, what: str, source: Path) -> Tensor:
    if not isinstance(value, Tensor):
        raise InteropError(f"{source}: {what} must be a tensor, got {type(value).__name__}")
    return value.detach().cpu()


def read_dm_result(path: str | Path, experiment: int = 0) -> tuple[Tensor, Tensor]:
    """``(images, labels)`` of one experiment of a DC/DSA/DM ``res_*.pt`` file."""
    path = Path(path)
    content = load_tensor_file(path)
    if not isinstance(content, dict) or "data" not in content:
        raise InteropError(
            f"{path}: expected the reference result dict {{'data': [[images, labels], ...], ...}}, "
            f"got {type(content).__name__}" + (f" with keys {sorted(content)}" if isinstance(content, dict) else "")
        )
    experiments = content["data"]
    if not isinstance(experiments, (list, tuple)) or not experiments:
        raise InteropError(f"{path}: 'data' must be a non-empty list of [images, labels] pairs")
    if not -len(experiments) <= experiment < len(experiments):
        raise InteropError(f"{path} holds {len(experiments)} experiments (0..{len(experiments) - 1}); got {experiment}")
    pair = experiments[experiment]
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise InteropError(f"{path}: data[{experiment}] must be an [images, labels] pair")
    return _tensor(pair[0], "images", path), _tensor(pair[1], "labels", path)


def read_ddranking(directory: str | Path, num_classes: int) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(images, hard labels, soft labels or None)`` from ``images.pt`` [+ ``labels.pt``]."""
    directory = Path(directory)
    images = _tensor(load_tensor_file(directory / DDRANKING_IMAGES), "images", directory / DDRANKING_IMAGES)
    label_path = directory / DDRANKING_LABELS
    if not label_path.is_file():
        per_class, remainder = divmod(images.shape[0], num_classes)
        if remainder or per_class == 0:
            raise InteropError(
                f"{directory} has no {DDRANKING_LABELS} and {images.shape[0]} images do not split evenly "
                f"into {num_classes} classes; add {DDRANKING_LABELS}"
            )
        return images, torch.arange(num_classes).repeat_interleave(per_class), None
    labels = _tensor(load_tensor_file(label_path), "labels", label_path)
    if labels.ndim != 2:
        return images, labels, None
    hard_path = directory / HARD_LABELS
    hard = _tensor(load_tensor_file(hard_path), "hard labels", hard_path) if hard_path.is_file() else labels.argmax(1)
    return images, hard, labels.float()


def read_image_folder_set(directory: str | Path, info: DatasetInfo) -> tuple[Tensor, Tensor]:
    """Images in [0, 1] and labels from ``<directory>/<class>/<image>`` (sizes must match ``info``)."""
    from PIL import Image, UnidentifiedImageError

    directory = Path(directory)
    if not directory.is_dir():
        raise InteropError(f"{directory} is not a folder")
    folders = sorted(p for p in directory.iterdir() if p.is_dir())
    if not folders:
        raise InteropError(f"{directory}: no class sub-folders; expected {directory}/<class>/<image>")
    numbered = [re.match(r"\d+", p.name) for p in folders]
    labels_of = [int(m.group()) for m in numbered] if all(numbered) else list(range(len(folders)))
    mode = "L" if info.channels == 1 else "RGB"
    images, labels = [], []
    for folder, label in zip(folders, labels_of):
        files = list_images(folder)
        if not files:
            raise InteropError(f"{folder}: class folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        for file in files:
            try:
                with Image.open(file) as img:
                    array = np.asarray(img.convert(mode), dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError) as exc:
                raise InteropError(f"{file}: cannot decode image ({exc})") from exc
            if array.shape[:2] != tuple(info.image_size):
                raise InteropError(
                    f"{file} is {array.shape[1]}x{array.shape[0]} px but '{info.name}' images are "
                    f"{info.image_size[1]}x{info.image_size[0]}; resize the set first"
                )
            images.append(torch.from_numpy(array).reshape(*array.shape[:2], -1).permute(2, 0, 1))
            labels.append(label)
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


def _checked_set(images: Tensor, labels: Tensor, soft: Tensor | None, info: DatasetInfo, source: Path) -> ImageSet:
    expected = (info.channels, *info.image_size)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise InteropError(
            f"{source}: images have shape {tuple(images.shape)}, "
            f"'{info.name}' needs (N, {', '.join(map(str, expected))})"
        )
    if not images.is_floating_point() or not torch.isfinite(images).all():
        raise InteropError(f"{source}: images must be finite floating-point tensors (got {images.dtype})")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.is_floating_point():
        raise InteropError(
            f"{source}: labels must be {images.shape[0]} integers, got {labels.dtype} {tuple(labels.shape)}"
        )
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= info.num_classes):
        raise InteropError(
            f"{source}: labels span {int(labels.min())}..{int(labels.max())}, '{info.name}' has classes "
            f"0..{info.num_classes - 1}"
        )
    if soft is not None and tuple(soft.shape) != (images.shape[0], info.num_classes):
        raise InteropError(
            f"{source}: soft labels must be ({images.shape[0]}, {info.num_classes}), got {tuple(soft.shape)}"
        )
    return ImageSet(images.float().contiguous(), labels.long(), soft)


def _source_digest(source: Path) -> str:
    if source.is_file():
        return sha256_file(source)
    digest = hashlib.sha256()
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(source)).encode() + b"\0" + bytes.fromhex(sha256_file(file)))
    return digest.hexdigest()


def detect_import_format(source: str | Path) -> ImportFormat:
    """The format of ``source`` from what is there: a file is a DM result, a folder with ``images.pt`` a
    DD-Ranking set, a folder of class folders an image folder. Raises InteropError naming the fix otherwise."""
    source = Path(source)
    if source.is_file():
        return "dm"
    if not source.exists():
        raise InteropError(f"{source} does not exist; pass a DM result file (res_*.pt), a DD-Ranking folder "
                           f"({DDRANKING_IMAGES}) or an image folder (one sub-folder per class)")
    if (source / DDRANKING_IMAGES).is_file():
        return "ddranking"
    if any(child.is_dir() for child in source.iterdir()):
        return "imagefolder"
    raise InteropError(f"{source} holds neither {DDRANKING_IMAGES} (DD-Ranking) nor class sub-folders (image "
                       "folder); pass the folder that does, or a DM result file (res_*.pt), or name --format")


def import_set(
    source: str | Path,
    out_dir: str | Path,
    *,
    fmt: ImportFormat | Literal["auto"] = "auto",
    dataset: str,
    method: str | None = None,
    experiment: int = 0,
) -> Path:
    """Import a published set into a run directory; returns the manifest path.

    Tensor formats must hold normalised pixels with ``dataset``'s mean/std (as the DC/DM code and
    DD-Ranking produce them); image folders hold [0, 1] pixels and are normalised here. ``fmt="auto"``
    detects the format (:func:`detect_import_format`).
    """
    source = Path(source)
    info = dataset_info(dataset)
    soft = None
    if fmt == "auto":
        fmt = detect_import_format(source)
    if fmt == "dm":
        images, labels = read_dm_result(source, experiment)
    elif fmt == "ddranking":
        images, labels, soft = read_ddranking(source, info.num_classes)
    elif fmt == "imagefolder":
        pixels, labels = read_image_folder_set(source, info)
        images = info.normalize(pixels)
    else:
        raise ValueError(f"unknown import format {fmt!r}; choose one of {', '.join(IMPORT_FORMATS)}")
    synthetic = _checked_set(images, labels, soft, info, source)
    counts = synthetic.class_counts(info.num_classes)
    source_record = {"path": str(source.resolve()), "format": fmt, "sha256": _source_digest(source)}
    if fmt == "dm":
        source_record["experiment"] = experiment
    return save_run(
        out_dir, synthetic, method=method or f"imported-{fmt}", dataset=info.name, ipc=int(counts.max()), seed=0,
        config={"imported": source_record}, wall_seconds=0.0,
        extra={"kind": "imported", "class_counts": counts.tolist(), "source": source_record},
    )
