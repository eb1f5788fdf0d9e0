"""Teachers: trained once, cached by recipe, verified on load, resumable, listed by the CLI."""

import json

import pytest
import torch
from typer.testing import CliRunner

from distillset.cli import app
from distillset.data.base import DatasetSplits
from distillset.io import ArtifactError
from distillset.training.teachers import (
    TeacherRecipe,
    list_teachers,
    load_teacher,
    make_recipe,
    train_teacher,
)


@pytest.fixture()
def small_digits(digits):
    """300 training images: a teacher trains in about a second."""
    return DatasetSplits(digits.info, digits.train.subset(torch.arange(300)), digits.test)


def test_recipe_key_depends_on_every_field(small_digits):
    recipe = make_recipe(small_digits, "convnet3", epochs=2, precision="fp32")
    assert recipe.train_size == 300 and recipe.precision == "fp32"
    assert recipe.key().startswith("digits-convnet3-e2-dsa-s0-")
    assert make_recipe(small_digits, "convnet3", epochs=2, precision="fp32", lr=0.02).key() != recipe.key()
    assert make_recipe(small_digits, "convnet3", epochs=2, precision="fp32",
                       network_options={"width": 16}).key().startswith("digits-convnet3-width16-e2")
    assert recipe.eval_config().epochs == 1  # the protocol loop runs epochs + 1 passes
    with pytest.raises(ValueError, match="at least one epoch"):
        TeacherRecipe(dataset="digits", epochs=0)


def test_train_cache_load_and_verify(small_digits, tmp_path):
    recipe = make_recipe(small_digits, "mlp", epochs=10, dsa=False, precision="fp32", batch_size=32, lr=0.05)
    teacher = train_teacher(small_digits, recipe, root=tmp_path)
    assert teacher.test_accuracy > 50.0  # chance is 10 %: the teacher learnt the digits
    manifest = json.loads((teacher.path / "manifest.json").read_text())
    assert manifest["recipe"] == recipe.__dict__ and len(manifest["sha256"]) == 64
    assert not (teacher.path / "training.safetensors").exists()
    # Same recipe: the stored teacher comes back (no training), with the same weights and predictions.
    again = train_teacher(small_digits, recipe, root=tmp_path)
    assert again.manifest["created"] == manifest["created"]
    images = small_digits.test.images[:20]
    assert torch.equal(again.logits(images), teacher.logits(images))
    probs = again.soft_labels(images, temperature=2.0)
    assert torch.allclose(probs.sum(1), torch.ones(20)) and probs.max() < 1.0
    assert [m["path"] for m in list_teachers(tmp_path)] == [str(teacher.path)]
    # A changed weights file is caught by the sha256.
    weights = teacher.path / "teacher.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ArtifactError, match="sha256"):
        load_teacher(teacher.path)
    with pytest.raises(ArtifactError, match="not a teacher"):
        load_teacher(tmp_path)


def test_recipe_must_match_the_data(small_digits, digits, tmp_path):
    recipe = make_recipe(small_digits, "convnet3", epochs=1, precision="fp32")
    with pytest.raises(ValueError, match="300 training images"):
        train_teacher(digits, recipe, root=tmp_path)


def test_stopped_training_resumes_to_the_same_weights(small_digits, tmp_path, monkeypatch):
    recipe = make_recipe(small_digits, "convnet3", epochs=4, precision="fp32", batch_size=64,
                         network_options={"width": 8})
    straight = train_teacher(small_digits, recipe, root=tmp_path / "a")

    import distillset.training.teachers as teachers

    real_test = teachers.test_accuracy

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    # First process: checkpoints every epoch, then is stopped before testing.
    monkeypatch.setattr(teachers, "test_accuracy", stop)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(small_digits, recipe, root=tmp_path / "b", checkpoint_seconds=0.0)
    folder = tmp_path / "b" / recipe.key()
    assert (folder / "training.safetensors").is_file() and not (folder / "manifest.json").exists()
    assert teachers.teachers_in_training(tmp_path / "b") == [folder]
    monkeypatch.setattr(teachers, "test_accuracy", real_test)
    resumed = train_teacher(small_digits, recipe, root=tmp_path / "b")
    for key, value in straight.net.state_dict().items():
        assert torch.equal(value, resumed.net.state_dict()[key]), key
    assert resumed.manifest["sha256"] == straight.manifest["sha256"]


def test_cli_train_and_list(tmp_path):
    runner = CliRunner()
    args = ["teacher", "train", "--dataset", "digits", "--epochs", "1", "--width", "8", "--no-dsa",
            "--precision", "fp32", "--root", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output
    listed = runner.invoke(app, ["teacher", "list", "--root", str(tmp_path)])
    assert listed.exit_code == 0 and "digits convnet3 1 epochs no aug. fp32" in listed.output
    out = runner.invoke(app, [*args, "--out", str(tmp_path / "mine")])
    assert out.exit_code == 0 and (tmp_path / "mine" / "manifest.json").is_file()
    other = runner.invoke(app, [*args, "--out", str(tmp_path / "mine"), "--lr", "0.02"])
    assert other.exit_code == 2 and "another recipe" in other.output
    bad = runner.invoke(app, ["teacher", "train", "--dataset", "digits", "--model", "nope", "--root", str(tmp_path)])
    assert bad.exit_code == 2 and "nope" in bad.output
