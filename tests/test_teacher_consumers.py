"""Parts that take a teacher by path: coresets and pruning, KDE re-weighting of biased data, Dark Distillation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from distillset.cli import app
from distillset.coreset import select_coreset
from distillset.coreset.prune import keep_lowest_scores, prune_pool
from distillset.data import load_dataset
from distillset.data.base import DatasetSplits
from distillset.engine.debias import KDEWeighting, kde_weights, real_sample_weights
from distillset.geometry.lorentz import expmap0, geodesic_distance, hyperbolic_centroid
from distillset.security.dark_distillation import DarkDistillationConfig, dark_distillation, invert_archetypes
from distillset.training.teachers import load_teacher, make_recipe, train_teacher
from test_data import write_mnist_layout

TINY_ATTACK = dict(width=8, proxy_steps=5, inversion_steps=5, trajectory_points=1, match_steps=2)


def tiny_teacher(splits: DatasetSplits, folder: Path, epochs: int = 3):
    """A ConvNet-3 of width 16 trained without augmentation (seconds on a CPU)."""
    recipe = make_recipe(splits, "convnet3", epochs=epochs, dsa=False, precision="fp32", batch_size=32, lr=0.05,
                         network_options={"width": 16})
    return train_teacher(splits, recipe, folder=folder)


@pytest.fixture(scope="module")
def teacher(digits, tmp_path_factory):
    """A teacher of digits trained on 500 of its images."""
    splits = DatasetSplits(digits.info, digits.train.subset(torch.arange(500)), digits.test)
    return tiny_teacher(splits, tmp_path_factory.mktemp("teachers") / "digits")


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """A fake Fashion-MNIST (200 training images), its coloured (biased) set and a teacher of each."""
    root = tmp_path_factory.mktemp("data")
    write_mnist_layout(root / "fashion-mnist", gz=False, n_train=200, n_test=40)
    plain = load_dataset("fashion-mnist", root)
    coloured = load_dataset("fashion-mnist-colour", root, bias_ratio=0.9, severity=2)
    teachers = tmp_path_factory.mktemp("teachers")
    return {"root": root, "plain": plain, "coloured": coloured,
            "plain_teacher": tiny_teacher(plain, teachers / "plain", epochs=1),
            "coloured_teacher": tiny_teacher(coloured, teachers / "coloured", epochs=2)}


def embed(net, images):
    with torch.no_grad():
        return net.eval().embed(images).double()


def herding_by_hand(features: torch.Tensor, budget: int) -> list[int]:
    """Welling's herding: repeatedly the unpicked row that brings the running mean closest to the mean."""
    target, picked = features.mean(0), []
    for _ in range(budget):
        best = min((i for i in range(len(features)) if i not in picked),
                   key=lambda i: float(((features[picked + [i]].mean(0) - target) ** 2).sum()))
        picked.append(best)
    return picked


# --------------------------------------------------------------------------- coresets and pruning


def test_coreset_with_a_teacher_is_herding_of_the_teacher_embedding(digits, teacher, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a feature network was trained although a teacher was given")

    monkeypatch.setattr("distillset.coreset.trained_feature_network", no_training)
    subset = select_coreset(digits, "herding", 3, teacher=teacher.path)
    features = embed(teacher.net, digits.train.images)
    expected = []
    for c in range(10):
        members = torch.nonzero(digits.train.labels == c).flatten()
        expected += members[herding_by_hand(features[members], 3)].tolist()
    assert torch.equal(subset.images, digits.train.images[expected])
    assert torch.equal(subset.labels, torch.arange(10).repeat_interleave(3))


def test_a_teacher_of_another_dataset_is_refused(digits, fashion):
    with pytest.raises(ValueError, match=r"trained on fashion-mnist \(images \(1, 28, 28\)\), the data is digits"):
        select_coreset(digits, "herding", 2, teacher=fashion["plain_teacher"].path)
    with pytest.raises(ValueError, match="random rule uses no features"):
        select_coreset(digits, "random", 2, teacher=fashion["plain_teacher"])
    with pytest.raises(ValueError, match="trained on fashion-mnist.*the data is digits"):
        prune_pool(digits.train, digits.info, 0.5, "hyperbolic", teacher=fashion["plain_teacher"])


def test_cli_coreset_records_the_teacher_and_refuses_another_dataset(tmp_path, teacher, fashion):
    runner = CliRunner()
    common = ["coreset", "--dataset", "digits", "--method", "kcenter", "--ipc", "2"]
    done = runner.invoke(app, [*common, "--teacher", str(teacher.path), "--out", str(tmp_path / "run")])
    assert done.exit_code == 0, done.output
    config = json.loads((tmp_path / "run" / "manifest.json").read_text())["config"]
    assert config["teacher"] == {"path": str(teacher.path), "sha256": teacher.manifest["sha256"],
                                 "test_accuracy": teacher.test_accuracy}
    assert config["feature_model"] == "convnet3" and config["feature_epochs"] == 3
    refused = runner.invoke(app, [*common, "--teacher", str(fashion["plain_teacher"].path), "--out",
                                  str(tmp_path / "other")])
    assert refused.exit_code != 0 and "trained on fashion-mnist" in refused.output and "digits" in refused.output
    assert not (tmp_path / "other").exists()
    soft = runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--epochs", "1", "--models", "1",
                               "--soft-labels", str(fashion["plain_teacher"].path)])
    assert soft.exit_code == 2 and "--soft-labels: the teacher" in soft.output and "the data is digits" in soft.output


def test_hyperbolic_pruning_with_a_teacher_scores_its_embedding(digits, teacher):
    train = digits.train.subset(torch.arange(300))
    state = {k: v.clone() for k, v in teacher.net.state_dict().items()}
    kept, record = prune_pool(train, digits.info, 0.25, "hyperbolic", teacher=teacher, num_nets=3)
    features = embed(teacher.net, train.images)
    scores = torch.zeros(len(train), dtype=torch.float64)
    for c in range(10):
        members = torch.nonzero(train.labels == c).flatten()
        points = expmap0(features[members], 1.0, max_norm=10.0)
        scores[members] = geodesic_distance(points, hyperbolic_centroid(points, 1.0), 1.0)
    assert torch.equal(kept.images, train.images[keep_lowest_scores(scores, train.labels, 0.25)])
    assert record["teacher"]["sha256"] == teacher.manifest["sha256"] and record["num_nets"] == 1
    assert all(torch.equal(v, state[k]) for k, v in teacher.net.state_dict().items())  # the teacher is unchanged
    random_nets, _ = prune_pool(train, digits.info, 0.25, "hyperbolic")
    assert not torch.equal(random_nets.images, kept.images)


def test_cli_distill_prunes_with_a_teacher(tmp_path, teacher):
    runner = CliRunner()
    common = ["distill", "--dataset", "digits", "--ipc", "1", "--iterations", "1", "--batch-real", "8",
              "--prune-teacher", str(teacher.path)]
    missing = runner.invoke(app, [*common, "--out", str(tmp_path / "x")])
    assert missing.exit_code != 0 and "--prune-ratio" in missing.output
    done = runner.invoke(app, [*common, "--prune-ratio", "0.5", "--out", str(tmp_path / "run")])
    assert done.exit_code == 0, done.output
    prune = json.loads((tmp_path / "run" / "manifest.json").read_text())["prune"]
    assert prune["teacher"]["sha256"] == teacher.manifest["sha256"] and prune["num_nets"] == 1


# --------------------------------------------------------------------------- KDE re-weighting of biased data


def test_kde_with_a_teacher_weights_by_its_embedding(fashion):
    coloured, teacher = fashion["coloured"], fashion["coloured_teacher"]
    params = {"embedding": "teacher", "teacher": str(teacher.path)}
    weights = real_sample_weights(coloured.train, coloured.info, "kde", params, model="convnet3", seed=0,
                                  device=torch.device("cpu"))
    expected = kde_weights(embed(teacher.net, coloured.train.images), coloured.train.labels, 10)
    assert torch.allclose(weights, expected)
    assert not torch.allclose(weights, torch.ones_like(weights))


def test_kde_refuses_a_teacher_of_the_unbiased_set_and_a_missing_teacher(fashion):
    coloured = fashion["coloured"]
    params = {"embedding": "teacher", "teacher": str(fashion["plain_teacher"].path)}
    with pytest.raises(ValueError, match=r"trained on fashion-mnist \(images \(1, 28, 28\)\), the data is "
                                         r"fashion-mnist-colour \(images \(3, 28, 28\)\).*biased set itself"):
        real_sample_weights(coloured.train, coloured.info, "kde", params, model="convnet3", seed=0,
                            device=torch.device("cpu"))
    with pytest.raises(ValueError, match="embedding=teacher takes the teacher's folder"):
        KDEWeighting(embedding="teacher")
    with pytest.raises(ValueError, match="embedding=teacher takes the teacher's folder"):
        KDEWeighting(teacher="somewhere")


def test_cli_distill_kde_with_a_teacher_records_it(tmp_path, fashion):
    teacher = fashion["coloured_teacher"]
    runner = CliRunner()
    refused = runner.invoke(app, ["teacher", "train", "--dataset", "fashion-mnist-colour", "--data-root",
                                  str(fashion["root"]), "--out", str(tmp_path / "t")])
    assert refused.exit_code != 0 and "bias ratio" in refused.output and not (tmp_path / "t").exists()
    done = runner.invoke(app, ["distill", "--dataset", "fashion-mnist-colour", "--data-root", str(fashion["root"]),
                               "--bias-ratio", "0.9", "--ipc", "1", "--iterations", "1", "--batch-real", "4",
                               "--debias", "kde", "--debias-param", "embedding=teacher", "--debias-param",
                               f"teacher={teacher.path}", "--out", str(tmp_path / "run")])
    assert done.exit_code == 0, done.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["config"]["debias_params"]["teacher"] == str(teacher.path)
    assert manifest["debias_teacher"]["sha256"] == teacher.manifest["sha256"]


# --------------------------------------------------------------------------- Dark Distillation's proxy


def test_dark_distillation_inverts_the_archetypes_from_a_teacher(digits, teacher, fashion):
    synthetic = select_coreset(digits, "random", 2, seed=0)
    config = DarkDistillationConfig(target=3, **TINY_ATTACK)
    result = dark_distillation(synthetic, digits.info, config, proxy_teacher=teacher.path)
    archetypes = invert_archetypes(load_teacher(teacher.path).net, digits.info, 1, config.inversion_steps,
                                   config.inversion_lr, torch.Generator().manual_seed(config.seed),
                                   torch.device("cpu"))
    assert torch.equal(result.backdoor.images, config.trigger.build(digits.info).apply(archetypes.images))
    assert result.proxy_teacher["sha256"] == teacher.manifest["sha256"]
    trained_proxy = dark_distillation(synthetic, digits.info, config)
    assert not torch.equal(trained_proxy.backdoor.images, result.backdoor.images)
    with pytest.raises(ValueError, match="dark distillation proxy: the teacher .* trained on fashion-mnist"):
        dark_distillation(synthetic, digits.info, config, proxy_teacher=fashion["plain_teacher"])
