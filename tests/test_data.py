"""Tests for distillset.data: every on-disk format written for real into tmp_path and read back."""

from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distillset.data import (
    DatasetNotFoundError,
    ImageSet,
    available_datasets,
    dataset_info,
    dataset_names,
    load_dataset,
    long_tail_counts,
    make_long_tailed,
)
from distillset.data.formats import read_idx
from distillset.registry import UnknownNameError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalised(value: float, mean: float, std: float) -> float:
    """Reference for one pixel: uint8 value -> [0, 1] -> (x - mean) / std."""
    return (value / 255.0 - mean) / std


# --------------------------------------------------------------------------- writers (real formats)


def write_idx(path: Path, array: np.ndarray, type_code: int = 0x08) -> None:
    """IDX: magic 0x0000<type><ndim>, big-endian uint32 sizes, big-endian data."""
    dtype = {0x08: ">u1", 0x0C: ">i4"}[type_code]
    payload = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.astype(dtype).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def pixel_images(n: int, shape: tuple[int, ...]) -> np.ndarray:
    """uint8 images whose every pixel value encodes (image index, position) for exact checks."""
    return (np.arange(n * math.prod(shape)).reshape(n, *shape) * 7 % 256).astype(np.uint8)


def write_mnist_layout(directory: Path, gz: bool, n_train: int = 6, n_test: int = 4, size: int = 28) -> tuple:
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    train_x, test_x = pixel_images(n_train, (size, size)), pixel_images(n_test, (size, size))[::-1]
    train_y, test_y = np.arange(n_train) % 10, (np.arange(n_test) + 3) % 10
    write_idx(directory / f"train-images-idx3-ubyte{suffix}", train_x)
    write_idx(directory / f"train-labels-idx1-ubyte{suffix}", train_y)
    write_idx(directory / f"t10k-images-idx3-ubyte{suffix}", test_x)
    write_idx(directory / f"t10k-labels-idx1-ubyte{suffix}", test_y)
    return train_x, train_y, test_x, test_y


def write_cifar10_layout(root: Path, per_class: int = 1, test_per_class: int = 1) -> tuple:
    """``cifar-10-batches-py/`` with five data batches and a test batch, pickled protocol 2 like the originals."""
    directory = root / "cifar-10-batches-py"
    directory.mkdir(parents=True)
    train_y = np.tile(np.arange(10), per_class * 5)
    train_x = pixel_images(len(train_y), (3072,))
    for i, (x, y) in enumerate(zip(np.split(train_x, 5), np.split(train_y, 5)), start=1):
        batch = {b"batch_label": b"training batch", b"labels": y.tolist(), b"data": x, b"filenames": []}
        (directory / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
    test_y = np.tile(np.arange(10), test_per_class)
    test_x = pixel_images(len(test_y), (3072,))[::-1].copy()
    (directory / "test_batch").write_bytes(pickle.dumps({b"labels": test_y.tolist(), b"data": test_x}, protocol=2))
    return train_x, train_y, test_x, test_y


def write_image(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb.astype(np.uint8), "RGB").save(path)


def solid(height: int, width: int, colour: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(colour, dtype=np.uint8), (height, width, 3)).copy()


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_layout_round_trip(tmp_path: Path, gz: bool) -> None:
    train_x, train_y, test_x, test_y = write_mnist_layout(tmp_path / "fashion-mnist", gz)
    splits = load_dataset("fashion-mnist", tmp_path)  # found in the usual sub-folder of root
    assert splits.train.images.shape == (6, 1, 28, 28) and splits.test.images.shape == (4, 1, 28, 28)
    assert splits.train.images.dtype == torch.float32 and splits.train.images.is_contiguous()
    assert splits.train.labels.dtype == torch.int64
    assert splits.train.labels.tolist() == train_y.tolist() and splits.test.labels.tolist() == test_y.tolist()
    for split, raw in ((splits.train, train_x), (splits.test, test_x)):
        for n, r, c in ((0, 0, 0), (1, 5, 17), (len(raw) - 1, 27, 27)):
            expected = normalised(raw[n, r, c], 0.2861, 0.3530)
            assert split.images[n, 0, r, c].item() == pytest.approx(expected, abs=1e-5)


def test_idx_files_directly_in_root(tmp_path: Path) -> None:
    write_mnist_layout(tmp_path, gz=False, n_train=3, n_test=2)
    splits = load_dataset("mnist", tmp_path)
    assert len(splits.train) == 3 and len(splits.test) == 2
    assert splits.train.images[0, 0, 0, 0].item() == pytest.approx(normalised(0, 0.1307, 0.3081), abs=1e-6)


def test_idx_reads_declared_dtype_and_shape(tmp_path: Path) -> None:
    values = np.array([[1, -2, 300], [70000, 0, -1]])
    write_idx(tmp_path / "ints.idx", values, type_code=0x0C)
    assert read_idx(tmp_path / "ints.idx").tolist() == values.tolist()


def test_idx_bad_magic_names_file(tmp_path: Path) -> None:
    write_mnist_layout(tmp_path, gz=False)
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x12\x34\x08\x03" + bad.read_bytes()[4:])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: bad IDX magic number 0x12340803"):
        load_dataset("fashion-mnist", tmp_path)


def test_idx_label_file_given_as_images_is_rejected(tmp_path: Path) -> None:
    write_mnist_layout(tmp_path, gz=False)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes((tmp_path / "t10k-labels-idx1-ubyte").read_bytes())
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte: expected a 3-D unsigned-byte image IDX"):
        load_dataset("fashion-mnist", tmp_path)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_truncated_file_names_file(tmp_path: Path, gz: bool) -> None:
    write_mnist_layout(tmp_path, gz=gz)
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[:-40])
    expected = "corrupt or truncated gzip" if gz else r"truncated IDX file: the header declares shape \(6, 28, 28\)"
    with pytest.raises(ValueError, match=f"{name}: {expected}"):
        load_dataset("fashion-mnist", tmp_path)


def test_idx_mismatched_counts_name_both_files(tmp_path: Path) -> None:
    write_mnist_layout(tmp_path, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte / .*train-labels-idx1-ubyte: 6 images but 5 labels"):
        load_dataset("fashion-mnist", tmp_path)


def test_wrong_image_size_is_rejected(tmp_path: Path) -> None:
    write_mnist_layout(tmp_path, gz=False, size=20)
    with pytest.raises(ValueError, match=r"images have shape \(1, 20, 20\), 'mnist' expects \(1, 28, 28\)"):
        load_dataset("mnist", tmp_path)


# --------------------------------------------------------------------------- CIFAR


def test_cifar10_pickles(tmp_path: Path) -> None:
    train_x, train_y, test_x, test_y = write_cifar10_layout(tmp_path)
    splits = load_dataset("cifar10", tmp_path)
    assert splits.train.images.shape == (50, 3, 32, 32) and splits.test.images.shape == (10, 3, 32, 32)
    assert splits.train.labels.tolist() == train_y.tolist() and splits.test.labels.tolist() == test_y.tolist()
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    # row layout: 1024 red values, 1024 green, 1024 blue, each plane row-major
    for n, c, r, col in ((0, 0, 0, 1), (17, 1, 2, 3), (49, 2, 31, 30)):
        raw = train_x[n, c * 1024 + r * 32 + col]
        assert splits.train.images[n, c, r, col].item() == pytest.approx(normalised(raw, mean[c], std[c]), abs=1e-5)
    assert splits.test.images[9, 2, 5, 6].item() == pytest.approx(
        normalised(test_x[9, 2 * 1024 + 5 * 32 + 6], mean[2], std[2]), abs=1e-5
    )
    assert splits.info.class_names[0] == "airplane"


def test_cifar100_pickles_with_meta(tmp_path: Path) -> None:
    directory = tmp_path / "cifar-100-python"
    directory.mkdir()
    train_y, test_y = np.arange(100), np.arange(100)[::-1]
    train_x, test_x = pixel_images(100, (3072,)), pixel_images(100, (3072,))[::-1].copy()
    for name, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        batch = {b"data": x, b"fine_labels": y.tolist(), b"coarse_labels": (y // 5).tolist()}
        (directory / name).write_bytes(pickle.dumps(batch))  # current default protocol
    names = [f"class_{i:03d}".encode() for i in range(100)]
    (directory / "meta").write_bytes(pickle.dumps({b"fine_label_names": names, b"coarse_label_names": []}))
    splits = load_dataset("cifar-100", tmp_path / "cifar-100-python")  # alias, root = the folder itself
    assert splits.info.name == "cifar100" and splits.info.num_classes == 100
    assert splits.info.class_names[7] == "class_007"
    assert splits.train.labels.tolist() == train_y.tolist() and splits.test.labels.tolist() == test_y.tolist()
    assert splits.test.images[3, 1, 4, 5].item() == pytest.approx(
        normalised(test_x[3, 1024 + 4 * 32 + 5], 0.4866, 0.2564), abs=1e-5
    )


class _RunsCode:
    def __reduce__(self) -> tuple:
        return (os.getcwd, ())


def test_cifar_pickle_refuses_arbitrary_globals(tmp_path: Path) -> None:
    write_cifar10_layout(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": _RunsCode()}))
    with pytest.raises(ValueError, match=r"data_batch_3: .*refusing to load global '\w+\.getcwd'"):
        load_dataset("cifar10", tmp_path)


def test_cifar_batch_with_wrong_label_count(tmp_path: Path) -> None:
    write_cifar10_layout(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2]}, protocol=2))
    with pytest.raises(ValueError, match=r"test_batch: 4 images but 3 labels"):
        load_dataset("cifar10", tmp_path)


# --------------------------------------------------------------------------- SVHN


def test_svhn_mat(tmp_path: Path) -> None:
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    directory = tmp_path / "svhn"
    directory.mkdir()
    x = {split: rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8) for split, n in (("train", 5), ("test", 3))}
    y = {"train": np.array([[10], [1], [2], [10], [9]], np.uint8), "test": np.array([[3], [10], [4]], np.uint8)}
    for split in ("train", "test"):
        savemat(directory / f"{split}_32x32.mat", {"X": x[split], "y": y[split]})
    splits = load_dataset("svhn", tmp_path)
    assert splits.train.labels.tolist() == [0, 1, 2, 0, 9] and splits.test.labels.tolist() == [3, 0, 4]
    assert splits.train.images.shape == (5, 3, 32, 32)
    # X is (H, W, C, N): image n, channel c, row h, column w is X[h, w, c, n]
    for n, c, h, w in ((0, 0, 0, 0), (4, 2, 31, 1), (2, 1, 7, 20)):
        expected = normalised(x["train"][h, w, c, n], (0.4377, 0.4438, 0.4728)[c], (0.1980, 0.2010, 0.1970)[c])
        assert splits.train.images[n, c, h, w].item() == pytest.approx(expected, abs=1e-5)


# --------------------------------------------------------------------------- image folders


COLOURS = {"apple": (200, 10, 10), "lemon": (230, 220, 40), "sky": (20, 90, 250)}


def test_imagefolder_png_resized_and_normalised(tmp_path: Path) -> None:
    for name, colour in COLOURS.items():
        for i in range(2):
            write_image(tmp_path / "train" / name / f"{i}.png", solid(40 + 10 * i, 30, colour))
        write_image(tmp_path / "val" / name / "0.png", solid(24, 24, colour))
    splits = load_dataset("imagefolder", tmp_path, image_size=16)
    assert splits.info.num_classes == 3 and splits.info.class_names == ("apple", "lemon", "sky")
    assert splits.info.image_size == (16, 16)
    assert splits.train.images.shape == (6, 3, 16, 16) and splits.test.images.shape == (3, 3, 16, 16)
    assert splits.train.labels.tolist() == [0, 0, 1, 1, 2, 2] and splits.test.labels.tolist() == [0, 1, 2]
    for split in (splits.train, splits.test):
        for image, label in zip(split.images, split.labels):
            colour = list(COLOURS.values())[int(label)]
            expected = torch.tensor([normalised(v, m, s) for v, m, s in zip(colour, IMAGENET_MEAN, IMAGENET_STD)])
            torch.testing.assert_close(image.mean(dim=(1, 2)), expected, atol=1e-4, rtol=0)
            torch.testing.assert_close(image.amax(dim=(1, 2)), image.amin(dim=(1, 2)))


def test_imagefolder_centre_crops_instead_of_squashing(tmp_path: Path) -> None:
    wide = solid(20, 40, (255, 255, 255))
    wide[:, :8] = (0, 255, 0)  # a green band at the left edge, outside the central 20x20 crop
    write_image(tmp_path / "train" / "a" / "0.png", wide)
    write_image(tmp_path / "test" / "a" / "0.png", solid(20, 20, (0, 0, 0)))
    splits = load_dataset("imagefolder", tmp_path, image_size=10)
    pixels = splits.info.denormalize(splits.train.images)
    torch.testing.assert_close(pixels, torch.ones_like(pixels), atol=1e-5, rtol=0)


def test_imagenette_folder_and_class_count(tmp_path: Path) -> None:
    wnids = [f"n{i:08d}" for i in range(10)]
    data = tmp_path / "imagenette2-160"
    for wnid in wnids:
        write_image(data / "train" / wnid / "a.JPEG", solid(160, 200, (128, 128, 128)))
        write_image(data / "val" / wnid / "b.JPEG", solid(160, 160, (128, 128, 128)))
    splits = load_dataset("imagenette", tmp_path)
    assert splits.info.class_names == tuple(wnids)
    assert splits.train.images.shape == (10, 3, 128, 128) and splits.test.labels.tolist() == list(range(10))
    (data / "train" / wnids[0] / "a.JPEG").unlink()
    (data / "train" / wnids[0]).rmdir()
    with pytest.raises(ValueError, match=r"val: class folders \['n00000000'\] do not exist in the training split"):
        load_dataset("imagewoof", data)


def test_imagenette_rejects_wrong_number_of_classes(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_image(tmp_path / "train" / name / "0.png", solid(8, 8, (1, 2, 3)))
        write_image(tmp_path / "val" / name / "0.png", solid(8, 8, (1, 2, 3)))
    with pytest.raises(ValueError, match=r"found 2 classes but 'imagenette' has 10"):
        load_dataset("imagenette", tmp_path)


def test_tiny_imagenet_layout(tmp_path: Path) -> None:
    data = tmp_path / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(200)]
    for i, wnid in enumerate(wnids):
        write_image(data / "train" / wnid / "images" / f"{wnid}_0.JPEG", solid(64, 64, (i, 255 - i, 100)))
    write_image(data / "val" / "images" / "val_0.JPEG", solid(64, 64, (199, 56, 100)))
    write_image(data / "val" / "images" / "val_1.JPEG", solid(64, 64, (5, 250, 100)))
    annotations = f"val_0.JPEG\t{wnids[199]}\t0\t0\t63\t63\nval_1.JPEG\t{wnids[5]}\t1\t2\t3\t4\n"
    (data / "val" / "val_annotations.txt").write_text(annotations)
    (data / "wnids.txt").write_text("\n".join(reversed(wnids)))
    splits = load_dataset("tiny-imagenet", tmp_path)
    assert splits.train.images.shape == (200, 3, 64, 64) and splits.test.images.shape == (2, 3, 64, 64)
    assert splits.train.labels.tolist() == list(range(200)) and splits.test.labels.tolist() == [199, 5]
    pixels = splits.info.denormalize(splits.test.images) * 255  # JPEG is lossy: compare within a few levels
    torch.testing.assert_close(pixels[0].mean(dim=(1, 2)), torch.tensor([199.0, 56.0, 100.0]), atol=3, rtol=0)
    torch.testing.assert_close(pixels[1].mean(dim=(1, 2)), torch.tensor([5.0, 250.0, 100.0]), atol=3, rtol=0)


# --------------------------------------------------------------------------- long tail


def test_long_tail_counts_match_published_cifar_lt_sizes() -> None:
    # CIFAR-10-LT, imbalance factor 100 (Cao et al. 2019): 12,406 training images
    cifar10_if100 = long_tail_counts(5000, 10, 0.01)
    assert cifar10_if100 == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(cifar10_if100) == 12406
    assert long_tail_counts(5000, 10, 0.1)[-1] == 500 and long_tail_counts(5000, 10, 0.005)[-1] == 25
    assert sum(long_tail_counts(500, 100, 0.01)) == 10847  # CIFAR-100-LT, imbalance factor 100
    assert long_tail_counts(7, 4, 1.0) == [7, 7, 7, 7]
    assert long_tail_counts(10, 3, 0.01) == [10, 1, 1]  # floor(0.1) -> at least one image
    assert long_tail_counts(9, 1, 0.5) == [9]


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan")])
def test_long_tail_rejects_ratio_outside_unit_interval(bad: float) -> None:
    with pytest.raises(ValueError, match=r"imbalance must lie in \(0, 1\]"):
        long_tail_counts(100, 10, bad)


def _indexed_set(per_class: list[int]) -> ImageSet:
    """Images whose single pixel is their own index, so a subset reveals which images it kept."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))
    labels = labels[order]
    return ImageSet(torch.arange(len(labels), dtype=torch.float32).view(-1, 1, 1, 1), labels)


@pytest.mark.parametrize(("imbalance", "tail"), [(0.01, 50), (0.005, 25)])
def test_make_long_tailed_profile(imbalance: float, tail: int) -> None:
    full = _indexed_set([5000] * 10)
    lt = make_long_tailed(full, 10, imbalance, seed=3)
    counts = lt.class_counts(10).tolist()
    assert counts[0] == 5000 and counts[-1] == tail and counts == long_tail_counts(5000, 10, imbalance)
    kept = lt.images.flatten().long()
    assert torch.equal(full.labels[kept], lt.labels)  # each kept image carries its own label
    assert torch.all(kept[1:] > kept[:-1])  # original order, no duplicates


def test_make_long_tailed_uses_smallest_class_as_head_and_is_deterministic() -> None:
    full = _indexed_set([300, 250, 280, 400])
    first, again = make_long_tailed(full, 4, 0.1, seed=7), make_long_tailed(full, 4, 0.1, seed=7)
    other = make_long_tailed(full, 4, 0.1, seed=8)
    assert first.class_counts(4).tolist() == long_tail_counts(250, 4, 0.1) == [250, 116, 53, 25]
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.images, other.images)


def test_make_long_tailed_needs_every_class() -> None:
    with pytest.raises(ValueError, match=r"classes \[2\] have no training images"):
        make_long_tailed(_indexed_set([5, 5, 0, 5]), 4, 0.5)


def test_lt_name_loads_long_tailed_train_and_balanced_test(tmp_path: Path) -> None:
    _, _, _, test_y = write_cifar10_layout(tmp_path, per_class=4, test_per_class=3)
    lt = load_dataset("cifar10-lt", tmp_path, imbalance=0.25, seed=1)
    assert lt.info.name == "cifar10-lt" and lt.info.num_classes == 10
    assert lt.train.class_counts(10).tolist() == long_tail_counts(20, 10, 0.25) == [20, 17, 14, 12, 10, 9, 7, 6, 5, 5]
    assert lt.test.class_counts(10).tolist() == [3] * 10 and lt.test.labels.tolist() == test_y.tolist()
    again = load_dataset("CIFAR10_LT", tmp_path, imbalance=0.25, seed=1)
    assert torch.equal(lt.train.images, again.train.images)


def test_lt_name_requires_imbalance(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'fashion-mnist-lt' is long-tailed: pass imbalance="):
        load_dataset("fashion-mnist-lt", tmp_path)


@pytest.mark.parametrize("bad", [0.0, 1.01, -1.0])
def test_lt_name_rejects_ratio_outside_unit_interval(tmp_path: Path, bad: float) -> None:
    with pytest.raises(ValueError, match=r"imbalance must lie in \(0, 1\]"):
        load_dataset("cifar10-lt", tmp_path, imbalance=bad)


def test_balanced_name_rejects_imbalance(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"balanced dataset 'cifar10'; load 'cifar10-lt'"):
        load_dataset("cifar10", tmp_path, imbalance=0.01)


# --------------------------------------------------------------------------- registry and errors


def test_missing_dataset_error_lists_paths_and_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("cifar10", tmp_path)
    message = str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)
    assert f"{tmp_path / 'cifar-10-batches-py'}  (no such folder)" in message
    assert f"{tmp_path}  (missing: data_batch_1, data_batch_2" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message and "--data-root" in message


def test_missing_fashion_mnist_mentions_debian_package(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"(?s)fashion-mnist.*apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", tmp_path / "nowhere")


def test_imagefolder_without_root_says_nothing_was_searched() -> None:
    with pytest.raises(DatasetNotFoundError, match=r"Looked nowhere: no root was given"):
        load_dataset("imagefolder")


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown dataset 'cifar11'; choose one of: .*cifar10"):
        load_dataset("cifar11")
    with pytest.raises(UnknownNameError, match=r"fashion-mnist-lt"):
        dataset_info("mnist-tl")


def test_dataset_info_constants_and_aliases() -> None:
    cifar = dataset_info("CIFAR10")
    assert (cifar.channels, cifar.image_size, cifar.num_classes) == (3, (32, 32), 10)
    assert cifar.mean == (0.4914, 0.4822, 0.4465) and cifar.std == (0.2023, 0.1994, 0.2010)
    assert dataset_info("FashionMNIST") == dataset_info("fmnist") == dataset_info("fashion_mnist")
    assert dataset_info("fashion-mnist").mean == (0.2861,) and dataset_info("mnist").std == (0.3081,)
    assert dataset_info("imagewoof").image_size == (128, 128) and dataset_info("imagewoof").mean == IMAGENET_MEAN
    assert dataset_info("tiny-imagenet").num_classes == 200 and dataset_info("tiny-imagenet-lt").image_size == (64, 64)
    names = dataset_names()
    assert {"cifar10", "cifar10-lt", "fashion-mnist-lt", "digits", "imagefolder", "tiny-imagenet"} <= set(names)
    assert {"mnist-colour", "fashion-mnist-colour", "cifar10-corrupted"} <= set(names)  # biased variants
    assert "fmnist" not in names and len(names) == 23


def test_image_size_only_for_decoded_datasets(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'cifar10' has a fixed image size \(32, 32\); .*imagenette"):
        load_dataset("cifar10", tmp_path, image_size=64)


def test_available_datasets_reports_found_and_searched(tmp_path: Path) -> None:
    write_cifar10_layout(tmp_path)
    report = {name: (found, where) for name, found, where in available_datasets(tmp_path)}
    assert report["cifar10"] == (True, str(tmp_path / "cifar-10-batches-py"))
    assert report["svhn"] == (
        False,
        f"looked in {tmp_path / 'svhn'}  (no such folder); {tmp_path}  (missing: train_32x32.mat, test_32x32.mat)",
    )
    assert report["imagefolder"] == (False, f"looked in {tmp_path}  (missing: train, val|test)")
    assert report["digits"][0] is True and "sklearn" in report["digits"][1]


def test_digits_split_and_normalisation() -> None:
    splits = load_dataset("digits")
    assert splits.train.images.shape == (1437, 1, 8, 8) and splits.test.images.shape == (360, 1, 8, 8)
    assert splits.test.class_counts(10).tolist() == [36, 36, 35, 37, 36, 37, 36, 36, 35, 36]  # stratified
    # the hard-coded mean/std are the train-split statistics, so the normalised train set is standardised
    assert splits.train.images.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert splits.train.images.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-3)
    pixels = splits.info.denormalize(splits.test.images) * 16  # raw digits values are integers 0..16
    torch.testing.assert_close(pixels, pixels.round(), atol=1e-4, rtol=0)
    assert torch.equal(load_dataset("digits").test.labels, splits.test.labels)


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_loads_fast() -> None:
    start = time.perf_counter()
    splits = load_dataset("fashion-mnist")
    seconds = time.perf_counter() - start
    assert splits.train.images.shape == (60000, 1, 28, 28) and splits.test.images.shape == (10000, 1, 28, 28)
    assert splits.train.class_counts(10).tolist() == [6000] * 10
    assert splits.test.class_counts(10).tolist() == [1000] * 10
    pixels = splits.info.denormalize(splits.train.images)
    assert pixels.mean().item() == pytest.approx(0.2861, abs=1e-3)
    assert pixels.std().item() == pytest.approx(0.3530, abs=1e-3)
    assert seconds < 3.0, f"loading Fashion-MNIST took {seconds:.2f} s (target about 2 s)"
