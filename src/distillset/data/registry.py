"""The dataset registry: name -> description, on-disk layout, reader and where to get the files.

Each base dataset is registered twice: ``name`` (balanced, as published) and ``name-lt`` (the same
files, training split subsampled by :func:`distillset.data.longtail.make_long_tailed`).
Normalisation constants follow the DM reference code (``utils.get_dataset``; dm_protocol.md §5).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from distillset.data.base import DatasetInfo
from distillset.data.formats import (
    idx_file,
    read_cifar_batch,
    read_cifar_label_names,
    read_idx_split,
    read_image_folder,
    read_svhn_mat,
    read_tiny_imagenet,
)
from distillset.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEBIAN_DATASETS_DIR = Path("/usr/share/datasets")
DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0


class DatasetNotFoundError(FileNotFoundError):
    """A registered dataset's files are not where they were looked for."""

    def __str__(self) -> str:  # FileNotFoundError would prefix an errno; show the message plainly
        return str(self.args[0])


@dataclass(frozen=True)
class RawSplits:
    """What a reader returns: images ``(N, C, H, W)``, ``uint8`` in [0, 255] or float in [0, 1];
    labels int64; class names found on disk (empty: keep the registered ones)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...] = ()


Reader = Callable[[Path, tuple[int, int]], RawSplits]
"""``reader(data_dir, (height, width))``; the size matters only to readers that decode image files."""


@dataclass(frozen=True)
class DatasetSpec:
    """How to find, read and describe one registered dataset."""

    info: DatasetInfo
    read: Reader
    required: tuple[tuple[str, ...], ...] = ()  # entries of the data folder; each a tuple of alternatives
    folder_names: tuple[str, ...] = ()  # sub-folders of a root the data may sit in, tried before the root
    system_dirs: tuple[Path, ...] = ()  # searched when no root is given
    source: str = ""  # how to get the files, for error messages
    resizable: bool = False  # decoded from image files with PIL, so image_size may be chosen
    bundled_with: str = ""  # import name of the Python package that ships the data (no files needed)
    long_tailed: bool = False
    bias: str = ""  # "colour" | "corruption": a biased variant of the base dataset (distillset.data.biased)

    def candidate_dirs(self, root: str | Path | None) -> list[Path]:
        """Folders that may hold the data: ``root/<folder_name>`` then ``root``, or the system dirs."""
        if root is None:
            return list(self.system_dirs)
        base = Path(root).expanduser()
        return [base / name for name in self.folder_names] + [base]

    def missing(self, directory: Path) -> list[str]:
        """Required entries absent from ``directory`` (alternatives joined with '|')."""
        return ["|".join(alts) for alts in self.required if not any((directory / a).exists() for a in alts)]


def _bundle_dir(spec: DatasetSpec) -> Path | None:
    """Folder of the package that ships a bundled dataset, or None if it is not installed."""
    package = importlib.util.find_spec(spec.bundled_with)
    return None if package is None or package.origin is None else Path(package.origin).parent


def _search(spec: DatasetSpec, root: str | Path | None) -> tuple[Path | None, list[str]]:
    """The first candidate folder holding every required entry, and why each folder before it failed."""
    rejected: list[str] = []
    for directory in spec.candidate_dirs(root):
        missing = spec.missing(directory) if directory.is_dir() else []
        if directory.is_dir() and not missing:
            return directory, rejected
        rejected.append(f"{directory}  ({'missing: ' + ', '.join(missing) if missing else 'no such folder'})")
    return None, rejected


def locate(spec: DatasetSpec, root: str | Path | None) -> Path:
    """The first candidate folder holding every required file, else :class:`DatasetNotFoundError`.

    For a bundled dataset this is the folder of the package that ships it (``root`` is ignored).
    """
    if spec.bundled_with:
        package_dir = _bundle_dir(spec)
        if package_dir is None:
            raise DatasetNotFoundError(f"dataset '{spec.info.name}' needs {spec.bundled_with}: {spec.source}")
        return package_dir
    directory, rejected = _search(spec, root)
    if directory is not None:
        return directory
    where = (
        "Looked in:\n" + "\n".join(f"  {line}" for line in rejected)
        if rejected
        else "Looked nowhere: no root was given and this dataset has no default location."
    )
    raise DatasetNotFoundError(
        f"dataset '{spec.info.name}' not found.\n{where}\nTo get it: {spec.source}\n"
        "Then pass the folder that holds it as root=... (command line: --data-root DIR)."
    )


def probe(spec: DatasetSpec, root: str | Path | None) -> tuple[bool, str]:
    """(found, where it was found or where it was looked for), without reading any data."""
    if spec.bundled_with:
        package_dir = _bundle_dir(spec)
        return package_dir is not None, f"bundled with {spec.bundled_with} ({package_dir or 'not installed'})"
    directory, rejected = _search(spec, root)
    if directory is not None:
        return True, str(directory)
    return False, "looked in " + "; ".join(rejected) if rejected else "no default location; pass root / --data-root"


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register(spec: DatasetSpec, aliases: tuple[str, ...] = ()) -> None:
    """Register ``spec`` under its name and its long-tailed twin under ``name-lt``."""
    DATASETS.register(spec.info.name, aliases=aliases)(spec)
    twin = replace(spec, info=replace(spec.info, name=f"{spec.info.name}-lt"), long_tailed=True)
    DATASETS.register(twin.info.name, aliases=tuple(f"{alias}-lt" for alias in aliases))(twin)


# --------------------------------------------------------------------------- readers


def _read_mnist_family(directory: Path, size: tuple[int, int]) -> RawSplits:
    train = read_idx_split(
        idx_file(directory, "train-images-idx3-ubyte"), idx_file(directory, "train-labels-idx1-ubyte")
    )
    test = read_idx_split(idx_file(directory, "t10k-images-idx3-ubyte"), idx_file(directory, "t10k-labels-idx1-ubyte"))
    return RawSplits(*train, *test)


def _read_cifar10(directory: Path, size: tuple[int, int]) -> RawSplits:
    batches = [read_cifar_batch(directory / f"data_batch_{i}", b"labels") for i in range(1, 6)]
    test = read_cifar_batch(directory / "test_batch", b"labels")
    return RawSplits(
        np.concatenate([images for images, _ in batches]), np.concatenate([labels for _, labels in batches]), *test
    )


def _read_cifar100(directory: Path, size: tuple[int, int]) -> RawSplits:
    meta = directory / "meta"
    names = read_cifar_label_names(meta, b"fine_label_names") if meta.is_file() else ()
    return RawSplits(
        *read_cifar_batch(directory / "train", b"fine_labels"),
        *read_cifar_batch(directory / "test", b"fine_labels"),
        names,
    )


def _read_svhn(directory: Path, size: tuple[int, int]) -> RawSplits:
    return RawSplits(*read_svhn_mat(directory / "train_32x32.mat"), *read_svhn_mat(directory / "test_32x32.mat"))


def _read_tiny_imagenet(directory: Path, size: tuple[int, int]) -> RawSplits:
    train, val, names = read_tiny_imagenet(directory, size)
    return RawSplits(*train, *val, names)


def _read_train_val_folders(directory: Path, size: tuple[int, int]) -> RawSplits:
    """``train/<class>/*`` for training and ``val/<class>/*`` (or ``test/``) for testing."""
    train_images, train_labels, names = read_image_folder(directory / "train", size)
    test_dir = directory / "val" if (directory / "val").is_dir() else directory / "test"
    test_images, test_labels, _ = read_image_folder(test_dir, size, names)
    return RawSplits(train_images, train_labels, test_images, test_labels, names)


def _read_digits(package_dir: Path, size: tuple[int, int]) -> RawSplits:
    """scikit-learn's 8x8 digits (values 0..16 -> [0, 1]); stratified 1437/360 split, seed 0."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    train_x, test_x, train_y, test_y = train_test_split(
        images,
        digits.target.astype(np.int64),
        test_size=DIGITS_TEST_SIZE,
        stratify=digits.target,
        random_state=DIGITS_SPLIT_SEED,
    )
    return RawSplits(train_x, train_y, test_x, test_y)


# --------------------------------------------------------------------------- registrations

_IDX_FILES = tuple(
    (stem, f"{stem}.gz")
    for split in ("train", "t10k")
    for stem in (f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte")
)
_TRAIN_VAL = (("train",), ("val", "test"))
_DIGITS = tuple(str(d) for d in range(10))

register(
    DatasetSpec(
        DatasetInfo("mnist", 1, (28, 28), 10, (0.1307,), (0.3081,), _DIGITS),
        _read_mnist_family,
        _IDX_FILES,
        folder_names=("mnist", "MNIST/raw"),
        system_dirs=(DEBIAN_DATASETS_DIR / "mnist",),
        source="download the four IDX .gz files from http://yann.lecun.com/exdb/mnist/ "
        "(mirror: https://ossci-datasets.s3.amazonaws.com/mnist/) into a folder 'mnist/'.",
    )
)
register(
    DatasetSpec(
        DatasetInfo(
            "fashion-mnist",
            1,
            (28, 28),
            10,
            (0.2861,),
            (0.3530,),
            ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        ),
        _read_mnist_family,
        _IDX_FILES,
        folder_names=("fashion-mnist", "FashionMNIST/raw"),
        system_dirs=(DEBIAN_DATASETS_DIR / "fashion-mnist",),
        source="install the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist; files "
        "land in /usr/share/datasets/fashion-mnist), or download the four IDX .gz files from "
        "https://github.com/zalandoresearch/fashion-mnist (folder data/fashion) into a folder 'fashion-mnist/'.",
    ),
    aliases=("fashionmnist", "fmnist"),
)
register(
    DatasetSpec(
        DatasetInfo(
            "cifar10",
            3,
            (32, 32),
            10,
            (0.4914, 0.4822, 0.4465),
            (0.2023, 0.1994, 0.2010),
            ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        ),
        _read_cifar10,
        tuple((f"data_batch_{i}",) for i in range(1, 6)) + (("test_batch",),),
        folder_names=("cifar-10-batches-py",),
        source="download and extract https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz "
        "(it unpacks to cifar-10-batches-py/).",
    ),
    aliases=("cifar-10",),
)
register(
    DatasetSpec(
        DatasetInfo("cifar100", 3, (32, 32), 100, (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
        _read_cifar100,
        (("train",), ("test",)),
        folder_names=("cifar-100-python",),
        source="download and extract https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz "
        "(it unpacks to cifar-100-python/).",
    ),
    aliases=("cifar-100",),
)
register(
    DatasetSpec(
        DatasetInfo("svhn", 3, (32, 32), 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), _DIGITS),
        _read_svhn,
        (("train_32x32.mat",), ("test_32x32.mat",)),
        folder_names=("svhn",),
        source="download train_32x32.mat and test_32x32.mat from http://ufldl.stanford.edu/housenumbers/ "
        "into a folder 'svhn/'.",
    )
)
register(
    DatasetSpec(
        DatasetInfo("tiny-imagenet", 3, (64, 64), 200, IMAGENET_MEAN, IMAGENET_STD),
        _read_tiny_imagenet,
        (("train",), ("val/val_annotations.txt",)),
        folder_names=("tiny-imagenet-200",),
        source="download and unzip http://cs231n.stanford.edu/tiny-imagenet-200.zip "
        "(it unpacks to tiny-imagenet-200/).",
        resizable=True,
    ),
    aliases=("tinyimagenet",),
)
for _subset in ("imagenette", "imagewoof"):
    register(
        DatasetSpec(
            DatasetInfo(_subset, 3, (128, 128), 10, IMAGENET_MEAN, IMAGENET_STD),
            _read_train_val_folders,
            _TRAIN_VAL,
            folder_names=(f"{_subset}2", f"{_subset}2-320", f"{_subset}2-160", _subset),
            source=f"download and extract {_subset}2.tgz (or {_subset}2-320.tgz / {_subset}2-160.tgz) listed at "
            f"https://github.com/fastai/imagenette, e.g. https://s3.amazonaws.com/fast-ai-imageclas/{_subset}2.tgz.",
            resizable=True,
        )
    )
register(
    DatasetSpec(
        DatasetInfo("imagefolder", 3, (128, 128), 0, IMAGENET_MEAN, IMAGENET_STD),
        _read_train_val_folders,
        _TRAIN_VAL,
        source="arrange your images as <root>/train/<class>/<image> and <root>/val/<class>/<image> "
        "(or test/ instead of val/).",
        resizable=True,
    )
)

def register_biased(base: str, kind: str, mean: tuple[float, ...], std: tuple[float, ...],
                    aliases: tuple[str, ...]) -> None:
    """Register ``<base>-colour`` / ``<base>-corrupted``: the base dataset's files with a colour or corruption
    bias applied on load (3 channels, distillset.data.biased). ``mean``/``std``: the colour sets' per channel, of
    Fashion-MNIST's rho = 0.1 severity-2 training set as built, for MNIST from its grey mean/std and the mean
    colours (the same estimate gives Fashion-MNIST's within 0.001); the corrupted set keeps the base values."""
    spec = DATASETS.get(base)
    name = f"{base}-{'colour' if kind == 'colour' else 'corrupted'}"
    DATASETS.register(name, aliases=aliases)(
        replace(spec, info=replace(spec.info, name=name, channels=3, mean=mean, std=std), bias=kind))


register_biased("mnist", "colour", (0.0714, 0.0679, 0.0645), (0.2041, 0.1899, 0.1793), ("cmnist", "mnist-color"))
register_biased("fashion-mnist", "colour", (0.1552, 0.1476, 0.1400), (0.2479, 0.2296, 0.2158),
                ("cfmnist", "fashion-mnist-color"))
register_biased("cifar10", "corruption", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), ("ccifar10",))

register(
    DatasetSpec(
        DatasetInfo("digits", 1, (8, 8), 10, (0.3054,), (0.3761,), _DIGITS),
        _read_digits,
        source="it ships with scikit-learn (pip install scikit-learn).",
        bundled_with="sklearn",
    ),
    aliases=("sklearn-digits",),
)
