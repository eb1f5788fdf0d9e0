"""Biased datasets (colour and corruption bias), KDE re-weighting in the distillation loop, bias-aware evaluation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from distillset.cli import app
from distillset.data import BiasedSplits, load_dataset
from distillset.data.base import DatasetInfo, ImageSet
from distillset.data.biased import (
    COLOUR_JITTER,
    COLOURS,
    CORRUPTIONS,
    bias_attributes,
    colour_bias,
    contrast,
    corruption_bias,
    make_biased_arrays,
)
from distillset.engine import Distiller, config_for_method, run_together
from distillset.engine.debias import kde_weights
from distillset.evaluate import EvalConfig, evaluate_biased
from test_data import write_cifar10_layout, write_mnist_layout

# --------------------------------------------------------------------------- attribute assignment


def test_attributes_follow_the_lff_milestones_by_hand() -> None:
    # class 0, 20 images, rho 0.5: milestones round(20 * cumsum([.5, .5/9, ...])) = 10 11 12 13 14 16 17 18 19 20
    attributes = bias_attributes(np.zeros(20, dtype=np.int64), 0.5)
    assert attributes.tolist() == [0] * 10 + [1, 2, 3, 4, 5, 5, 6, 7, 8, 9]


@pytest.mark.parametrize("rho", [0.0, 0.1, 0.5, 0.8, 0.95, 1.0])
def test_attribute_counts_per_class(rho: float) -> None:
    labels = np.repeat(np.arange(10), 600)[np.random.default_rng(0).permutation(6000)]
    attributes = bias_attributes(labels, rho)
    for y in range(10):
        counts = np.bincount(attributes[labels == y], minlength=10)
        assert counts[y] == round(600 * rho)
        others = np.delete(counts, y)
        assert np.all(np.abs(others - 600 * (1 - rho) / 9) <= 1)


def test_bias_ratio_outside_unit_interval_is_rejected() -> None:
    with pytest.raises(ValueError, match="bias-aligned"):
        bias_attributes(np.zeros(3, dtype=np.int64), 1.5)


# --------------------------------------------------------------------------- colour bias


def test_colour_bias_colours_the_stroke_and_keeps_the_background_black() -> None:
    images = np.zeros((20, 1, 4, 4), dtype=np.uint8)
    images[:, :, 1:3, 1:3] = 255
    attributes = np.arange(20) % 10
    out = colour_bias(images, attributes, severity=4, rng=np.random.default_rng(0))
    assert out.shape == (20, 3, 4, 4) and out.dtype == np.uint8
    assert (out[:, :, 0, :] == 0).all() and (out[:, :, :, 0] == 0).all()
    stroke = out[:, :, 1, 1].astype(float) / 255
    # severity 4: jitter std 0.005 around the mean colour, plus at most 1/255 from truncation
    assert np.abs(stroke - COLOURS[attributes]).max() < 5 * COLOUR_JITTER[3] + 1 / 255


def test_colour_jitter_shrinks_with_severity() -> None:
    images = np.full((400, 1, 2, 2), 255, dtype=np.uint8)
    attributes = np.full(400, 4)
    spread = [colour_bias(images, attributes, s, np.random.default_rng(1))[:, :, 0, 0].std(axis=0).mean()
              for s in (1, 2, 3, 4)]
    assert spread == sorted(spread, reverse=True)
    assert spread[0] / 255 == pytest.approx(COLOUR_JITTER[0], rel=0.2)


def test_fashion_mnist_colour_loader_records_attributes(tmp_path: Path) -> None:
    write_mnist_layout(tmp_path / "fashion-mnist", gz=False, n_train=200, n_test=40)
    splits = load_dataset("fashion-mnist-colour", tmp_path, bias_ratio=0.8, severity=2)
    assert isinstance(splits, BiasedSplits)
    assert splits.train.images.shape == (200, 3, 28, 28) and splits.info.channels == 3
    assert float(splits.aligned_mask("train").float().mean()) == pytest.approx(0.8)
    assert not splits.aligned_mask("test").any()  # the paper's test split: rho = 0
    assert torch.equal(splits.aligned_test.labels, splits.test.labels)
    raw = splits.info.denormalize(splits.train.images)
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    # the test split does not depend on the training ratio
    again = load_dataset("cfmnist", tmp_path, bias_ratio=0.1, severity=2)
    assert torch.equal(again.test.images, splits.test.images)


def test_biased_names_need_a_ratio_and_others_refuse_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bias_ratio"):
        load_dataset("fashion-mnist-colour", tmp_path)
    with pytest.raises(ValueError, match="has no bias"):
        load_dataset("digits", bias_ratio=0.9)
    with pytest.raises(ValueError, match="severity"):
        load_dataset("fashion-mnist-colour", tmp_path, bias_ratio=0.9, severity=5)


# --------------------------------------------------------------------------- corruption bias


def test_contrast_by_hand() -> None:
    x = np.array([[[0.2, 0.4, 0.6]], [[0.6, 0.8, 1.0]]])  # 2 x 1 pixels, RGB
    out = contrast(x, 2, np.random.default_rng(0))  # level 2: factor 0.5 around the per-channel mean
    assert np.allclose(out, [[[0.3, 0.5, 0.7]], [[0.5, 0.7, 0.9]]])


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_every_corruption_keeps_range_and_shape_and_changes_the_image(name: str) -> None:
    x = np.random.default_rng(0).random((32, 32, 3)) * 0.8 + 0.1
    outs = [CORRUPTIONS[name](x.copy(), level, np.random.default_rng(3)) for level in (2, 5)]
    for out in outs:
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert np.abs(outs[1] - x).mean() > 0.005  # the strongest level visibly corrupts
    again = CORRUPTIONS[name](x.copy(), 5, np.random.default_rng(3))
    assert np.array_equal(again, outs[1])  # deterministic given the generator


def test_corruption_bias_applies_the_attribute_s_corruption() -> None:
    images = (np.random.default_rng(0).random((10, 3, 32, 32)) * 255).astype(np.uint8)
    attributes = np.arange(10)
    out = corruption_bias(images, attributes, 2, np.random.default_rng(0))
    jpeg_index = list(CORRUPTIONS).index("jpeg")
    expected = CORRUPTIONS["jpeg"](images[jpeg_index].transpose(1, 2, 0) / 255.0, 3, np.random.default_rng(0))
    assert np.array_equal(out[jpeg_index], (expected * 255).astype(np.uint8).transpose(2, 0, 1))


def test_cifar10_corrupted_from_cifar_files(tmp_path: Path) -> None:
    write_cifar10_layout(tmp_path, per_class=2, test_per_class=2)
    splits = load_dataset("ccifar10", tmp_path, bias_ratio=1.0, severity=1)
    assert splits.train.images.shape == (100, 3, 32, 32)
    assert bool(splits.aligned_mask("train").all())
    assert not splits.aligned_mask("test").any()
    plain = load_dataset("cifar10", tmp_path)
    assert not torch.equal(plain.train.images, splits.train.images)


# --------------------------------------------------------------------------- KDE weights and the engine


def test_kde_weights_by_hand() -> None:
    # one class: z1 = z2 = (1, 0), z3 = (0, 1); h = 1: k(z1, z3) = exp(-2 / 2)
    features = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    weights = kde_weights(features, torch.zeros(3, dtype=torch.long), 1, bandwidth=1.0)
    e = math.exp(-1)
    inverse = torch.tensor([3 / (2 + e), 3 / (2 + e), 3 / (1 + 2 * e)], dtype=torch.float64)
    assert torch.allclose(weights, inverse / inverse.mean())
    assert torch.allclose(kde_weights(features, torch.zeros(3, dtype=torch.long), 1, bandwidth=1.0, power=0.0),
                          torch.ones(3, dtype=torch.float64))


@pytest.fixture(scope="module")
def biased_digits() -> tuple:
    """The sklearn digits coloured with rho = 0.9 (uint8 8 x 8 strokes), as an ImageSet and its attributes."""
    digits = load_dataset("digits")
    raw = (digits.info.denormalize(digits.train.images) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    labels = digits.train.labels.numpy()
    arrays = make_biased_arrays("colour", raw, labels, raw[:10], labels[:10], 0.9, severity=2)
    info = DatasetInfo("digits-colour", 3, (8, 8), 10, (0.2,) * 3, (0.3,) * 3)
    images = info.normalize(torch.from_numpy(arrays.train_images).float() / 255)
    return ImageSet(images, digits.train.labels), torch.from_numpy(arrays.train_attributes), info


def test_kde_up_weights_conflicting_images_in_the_real_batches(biased_digits) -> None:
    real, attributes, info = biased_digits
    conflicting = attributes != real.labels

    def drawn_conflicting_share(debias: str) -> float:
        config = config_for_method("dm", ipc=2, iterations=0, batch_real=64, debias=debias)
        distiller = Distiller(real, info, config)
        picks = torch.cat([distiller._real_picks(c) for c in range(10) for _ in range(5)])
        return float(conflicting[picks].float().mean())

    uniform, reweighted = drawn_conflicting_share("none"), drawn_conflicting_share("kde")
    assert uniform == pytest.approx(0.1, abs=0.04)
    assert reweighted > 0.4  # colour clusters dominate a random net's embedding: the rare colours get the weight


def test_debias_settings_are_checked_and_part_of_the_shared_pass(biased_digits) -> None:
    real, _, info = biased_digits
    with pytest.raises(ValueError, match="unknown debias"):
        config_for_method("dm", debias="lff")
    with pytest.raises(ValueError, match="without a debias method"):
        config_for_method("dm", debias_params={"power": 2.0})
    with pytest.raises(ValueError, match="unknown kde parameter"):
        config_for_method("dm", debias="kde", debias_params={"kernel": "laplace"})
    runs = [Distiller(real, info, config_for_method("dm", ipc=1, iterations=1, debias=d))
            for d in ("none", "kde")]
    with pytest.raises(ValueError, match="debias"):
        run_together(runs)


# --------------------------------------------------------------------------- bias-aware evaluation


def test_a_colour_only_training_set_is_right_on_aligned_and_wrong_on_conflicting(tmp_path: Path) -> None:
    write_mnist_layout(tmp_path / "fashion-mnist", gz=False, n_train=200, n_test=40)
    splits = load_dataset("fashion-mnist-colour", tmp_path, bias_ratio=1.0, severity=4)
    config = EvalConfig(model="mlp", epochs=8, num_models=2, dsa=False, batch_size=64)
    result = evaluate_biased(splits.train, splits, config, checkpoint_dir=tmp_path / "eval")
    assert result.mean("aligned") > 80 and result.mean("conflicting") < 30  # only colour tells the classes apart
    for model in result.groups:
        assert model["unbiased"] == pytest.approx((model["aligned"] + 9 * model["conflicting"]) / 10)
    assert result.protocol.accuracies == pytest.approx(result.values("conflicting"))  # test split: rho = 0
    again = evaluate_biased(splits.train, splits, config, checkpoint_dir=tmp_path / "eval")  # resumed: no training
    assert again.groups == result.groups


def test_cli_distils_a_biased_set_with_kde_and_reports_the_groups(tmp_path: Path) -> None:
    write_cifar10_layout(tmp_path / "data", per_class=2, test_per_class=1)
    runner = CliRunner()
    common = ["--dataset", "cifar10-corrupted", "--data-root", str(tmp_path / "data"), "--ipc", "1",
              "--iterations", "2", "--batch-real", "4", ]
    missing = runner.invoke(app, ["distill", *common, "--out", str(tmp_path / "x")])
    assert missing.exit_code != 0 and "--bias-ratio" in missing.output
    run = tmp_path / "run"
    done = runner.invoke(app, ["distill", *common, "--bias-ratio", "0.8", "--debias", "kde",
                               "--debias-param", "bandwidth_scale=0.5", "--out", str(run)])
    assert done.exit_code == 0, done.output
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["debias"] == "kde" and manifest["bias"] == {"ratio": 0.8, "severity": 2}
    evaluated = runner.invoke(app, ["evaluate", str(run), "--model", "mlp", "--epochs", "1", "--models", "1",
                                     "--data-root", str(tmp_path / "data")])
    assert evaluated.exit_code == 0, evaluated.output
    assert "aligned" in evaluated.output and "conflicting" in evaluated.output
