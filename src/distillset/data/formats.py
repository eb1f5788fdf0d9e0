"""Readers for the on-disk formats the standard image-classification sets ship in.

Every reader returns numpy arrays: images ``(N, C, H, W)`` (``uint8`` in [0, 255]) and labels
``int64`` ``(N,)``. Malformed files raise :class:`ValueError` naming the file and the problem.
Scaling, normalisation and tensor conversion happen in :mod:`distillset.data`.
"""

from __future__ import annotations

import gzip
import math
import pickle
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

# IDX data-type codes (third byte of the magic number), http://yann.lecun.com/exdb/mnist/
_IDX_DTYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# --------------------------------------------------------------------------- IDX (MNIST family)


def idx_file(directory: Path, name: str) -> Path:
    """``directory/name`` if it exists, else the gzipped ``directory/name.gz``."""
    raw = directory / name
    return raw if raw.is_file() else directory / f"{name}.gz"


def read_idx(path: Path) -> np.ndarray:
    """Decode an IDX file (raw or ``.gz``) into an array of the shape its header declares."""
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: truncated IDX file: {len(data)} bytes, the magic number alone needs 4")
    type_code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or type_code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{data[:4].hex()}; expected 0x0000TTDD with TT a data-type code "
            f"({', '.join(f'{c:02x}' for c in _IDX_DTYPES)}) and DD >= 1 dimensions. Is this an IDX file?"
        )
    header_bytes = 4 + 4 * ndim
    if len(data) < header_bytes:
        raise ValueError(f"{path}: truncated IDX file: the header declares {ndim} dimensions but the file ends first")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = math.prod(shape) * dtype.itemsize
    found = len(data) - header_bytes
    if found != expected:
        problem = "truncated" if found < expected else "over-long"
        raise ValueError(
            f"{path}: {problem} IDX file: the header declares shape {shape} ({expected} data bytes) "
            f"but the file holds {found} data bytes"
        )
    return np.frombuffer(data, dtype=dtype, offset=header_bytes).reshape(shape)


def read_idx_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an MNIST-style image/label IDX pair: images ``(N, 1, H, W)`` uint8, labels int64."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{images_path}: expected a 3-D unsigned-byte image IDX file (magic 0x00000803), "
            f"got {images.ndim}-D {images.dtype}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(
            f"{labels_path}: expected a 1-D unsigned-byte label IDX file (magic 0x00000801), "
            f"got {labels.ndim}-D {labels.dtype}"
        )
    _check_counts(images_path, len(images), labels_path, len(labels))
    return images[:, None], labels.astype(np.int64)


def _read_bytes(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise ValueError(f"{path}: corrupt or truncated gzip file ({err})") from err


def _check_counts(images_source: Path, num_images: int, labels_source: Path, num_labels: int) -> None:
    if num_images != num_labels:
        where = str(images_source) if images_source == labels_source else f"{images_source} / {labels_source}"
        raise ValueError(f"{where}: {num_images} images but {num_labels} labels; the files do not belong together")


# --------------------------------------------------------------------------- CIFAR python pickles


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild dicts, lists, strings and numpy arrays, and nothing else.

    ``pickle.load`` will call any importable callable a file names, so a tampered CIFAR file
    could run code. This unpickler refuses every global except the few numpy uses to rebuild
    arrays/scalars/dtypes (under both the numpy 1.x ``numpy.core`` and 2.x ``numpy._core`` names)
    and ``_codecs.encode``, which Python-3 protocol-2 pickles use to store ``bytes``.
    """

    ALLOWED_GLOBALS = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load global '{module}.{name}': only numpy arrays and plain containers are allowed"
            )
        return super().find_class(module, name)


def load_numpy_pickle(path: Path) -> Any:
    """Load a pickle of plain containers and numpy arrays (Python 2 byte strings stay ``bytes``)."""
    try:
        with path.open("rb") as f:
            return _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a readable CIFAR-style pickle ({err})") from err


def read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR pickle (``{b'data': (N, 3072) uint8, label_key: [N ints]}``).

    Rows of ``b'data'`` hold the red, green then blue 32x32 planes, each row-major, so a plain
    reshape gives ``(N, 3, 32, 32)``.
    """
    batch = load_numpy_pickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{path}: expected a dict with keys b'data' and {label_key!r}, found {keys}")
    data = np.asarray(batch[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: b'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    labels = np.asarray(batch[label_key], dtype=np.int64)
    _check_counts(path, len(data), path, len(labels))
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar_label_names(path: Path, key: bytes) -> tuple[str, ...]:
    """Class names from a CIFAR ``meta`` / ``batches.meta`` pickle."""
    meta = load_numpy_pickle(path)
    if not isinstance(meta, dict) or key not in meta:
        raise ValueError(f"{path}: expected a dict with key {key!r}")
    return tuple(name.decode() if isinstance(name, bytes) else str(name) for name in meta[key])


# --------------------------------------------------------------------------- SVHN .mat


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an SVHN cropped-digits file: ``X`` (32, 32, 3, N) uint8, ``y`` (N, 1) in 1..10; 10 means digit 0."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path, variable_names=("X", "y"))
    except (ValueError, TypeError, OSError) as err:
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({err})") from err
    if "X" not in mat or "y" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path}: expected MATLAB variables 'X' and 'y', found {found}")
    images, labels = mat["X"], mat["y"].reshape(-1).astype(np.int64)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[2] != 3:
        raise ValueError(f"{path}: 'X' must be uint8 of shape (H, W, 3, N), got {images.dtype} {images.shape}")
    _check_counts(path, images.shape[3], path, len(labels))
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise ValueError(f"{path}: SVHN labels must lie in 1..10, found {labels.min()}..{labels.max()}")
    return np.ascontiguousarray(images.transpose(3, 2, 0, 1)), labels % 10


# --------------------------------------------------------------------------- image files (PIL)


def read_image_files(paths: Sequence[Path], size: tuple[int, int]) -> np.ndarray:
    """Decode images to RGB ``(N, 3, H, W)`` uint8 of ``size = (H, W)``.

    Images of another size are resized so that they cover ``size`` and centre-cropped
    (``PIL.ImageOps.fit``, bilinear) - the ``Resize`` + ``CenterCrop`` of ImageNet-subset code.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    height, width = size
    out = np.empty((len(paths), height, width, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB")
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"{path}: cannot decode image ({err})") from err
        if rgb.size != (width, height):
            rgb = ImageOps.fit(rgb, (width, height), method=Image.Resampling.BILINEAR)
        out[i] = np.asarray(rgb)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def list_images(directory: Path) -> list[Path]:
    """Image files directly inside ``directory``, sorted by name."""
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image_folder(
    split_dir: Path, size: tuple[int, int], class_names: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read ``split_dir/<class>/<image>`` (torchvision ImageFolder layout).

    Classes are the sorted sub-folder names unless ``class_names`` fixes them (e.g. the train
    split's classes when reading the validation split). Returns images, labels and class names.
    """
    folders = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if class_names is None:
        class_names = folders
    unknown = sorted(set(folders) - set(class_names))
    if unknown:
        raise ValueError(f"{split_dir}: class folders {unknown} do not exist in the training split")
    if not folders:
        raise ValueError(f"{split_dir}: no class sub-folders; expected {split_dir}/<class>/<image>")
    index = {name: i for i, name in enumerate(class_names)}
    paths: list[Path] = []
    labels: list[int] = []
    for name in folders:
        files = list_images(split_dir / name)
        if not files:
            raise ValueError(f"{split_dir / name}: class folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        paths += files
        labels += [index[name]] * len(files)
    return read_image_files(paths, size), np.asarray(labels, dtype=np.int64), tuple(class_names)


def read_tiny_imagenet(
    directory: Path, size: tuple[int, int]
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], tuple[str, ...]]:
    """Read ``tiny-imagenet-200``: ``train/<wnid>/images/*.JPEG`` and the labelled ``val`` split.

    The official test split has no labels, so the validation split serves as test set.
    Classes are the sorted training wnids. Returns (train, val, class names).
    """
    train_dir = directory / "train"
    class_names = tuple(sorted(p.name for p in train_dir.iterdir() if p.is_dir()))
    if not class_names:
        raise ValueError(f"{train_dir}: no class folders; expected {train_dir}/<wnid>/images/*.JPEG")
    paths: list[Path] = []
    labels: list[int] = []
    for label, wnid in enumerate(class_names):
        files = list_images(train_dir / wnid / "images")
        if not files:
            raise ValueError(f"{train_dir / wnid / 'images'}: class folder holds no images")
        paths += files
        labels += [label] * len(files)
    train = read_image_files(paths, size), np.asarray(labels, dtype=np.int64)

    annotations = directory / "val" / "val_annotations.txt"
    index = {wnid: i for i, wnid in enumerate(class_names)}
    val_paths: list[Path] = []
    val_labels: list[int] = []
    for line_number, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise ValueError(
                f"{annotations}:{line_number}: expected '<file>\\t<wnid>\\t...' with a training wnid, got {line!r}"
            )
        val_paths.append(directory / "val" / "images" / fields[0])
        val_labels.append(index[fields[1]])
    val = read_image_files(val_paths, size), np.asarray(val_labels, dtype=np.int64)
    return train, val, class_names
