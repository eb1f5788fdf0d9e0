"""UniDD/CFM's decoupled teacher pipeline: statistics, schedule, joint batches, resume, a real effect."""

import math

import pytest
import torch

from distillset.data.base import DatasetSplits
from distillset.engine.teacher_matching import (
    ChannelStatistics,
    TeacherMatchingConfig,
    batch_losses,
    cfm_beta,
    channel_statistics,
    distill_with_teacher,
    initial_images,
    real_statistics,
    statistics_distance,
)
from distillset.io import CheckpointMismatchError
from distillset.objectives.unidd import IdentityFilter, RidgeFilter
from distillset.runtime import compile_failure
from distillset.training.teachers import make_recipe, train_teacher


@pytest.fixture(scope="module")
def teacher(digits, tmp_path_factory):
    """A small ConvNet-3 teacher trained on 500 digits (about 80 % test accuracy)."""
    splits = DatasetSplits(digits.info, digits.train.subset(torch.arange(500)), digits.test)
    recipe = make_recipe(splits, "convnet3", epochs=12, dsa=False, precision="fp32", batch_size=32, lr=0.05,
                         network_options={"width": 16})
    return train_teacher(splits, recipe, root=tmp_path_factory.mktemp("teachers"))


def test_cfm_beta_schedule():
    assert cfm_beta(0, 10, 0.1) == pytest.approx(0.1)
    assert cfm_beta(5, 10, 0.1) == pytest.approx(0.05)
    assert cfm_beta(9, 10, 0.1) == pytest.approx(0.1 * (1 + math.cos(0.9 * math.pi)) / 2)
    betas = [f.beta for f in TeacherMatchingConfig(ipc=4).batch_filters()]
    assert betas == sorted(betas, reverse=True) and betas[0] == pytest.approx(0.1) and betas[-1] > 0
    assert {f.beta for f in TeacherMatchingConfig("lowpass-teacher", ipc=3).batch_filters()} == {0.1}
    assert {f.beta for f in TeacherMatchingConfig("highpass-teacher", ipc=3).batch_filters()} == {1e-3}
    with pytest.raises(ValueError, match="cfm-teacher"):
        TeacherMatchingConfig("cfm")


def test_channel_statistics_against_torch_cov():
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    rows = x.permute(0, 2, 3, 1).reshape(-1, 4)
    stats = channel_statistics(x)
    assert torch.allclose(stats.mean, rows.mean(0))
    assert torch.allclose(stats.cov, torch.cov(rows.T, correction=0))


def test_real_statistics_are_exact_over_batches(teacher, digits):
    images = digits.train.images[:70]
    whole = real_statistics(teacher.net, images, batch_size=70)
    batched = real_statistics(teacher.net, images, batch_size=16)
    assert len(whole) == 3  # the inputs of ConvNet-3's three convolutions
    assert whole[0].cov.shape == (1, 1) and whole[1].cov.shape == (16, 16)
    for a, b in zip(whole, batched, strict=True):
        assert torch.allclose(a.mean, b.mean, atol=1e-5) and torch.allclose(a.cov, b.cov, atol=1e-5)


def test_statistics_distance_by_hand():
    torch.manual_seed(0)
    a = torch.randn(50, 3, dtype=torch.float64)
    b = torch.randn(20, 3, dtype=torch.float64)
    real = ChannelStatistics(a.mean(0), torch.cov(a.T, correction=0))
    synthetic = ChannelStatistics(b.mean(0), torch.cov(b.T, correction=0))
    assert statistics_distance(real, real, RidgeFilter(0.1)).item() == pytest.approx(0.0, abs=1e-12)
    # f = 1: the filter term vanishes and the signal term is the distance of the means (DM).
    assert statistics_distance(real, synthetic, IdentityFilter()).item() == pytest.approx(
        torch.linalg.vector_norm(real.mean - synthetic.mean).item())
    eye = torch.eye(3, dtype=torch.float64)
    r_real, r_syn = torch.linalg.inv(real.cov + 0.1 * eye), torch.linalg.inv(synthetic.cov + 0.1 * eye)
    expected = torch.linalg.matrix_norm(r_real - r_syn) + torch.linalg.vector_norm(
        r_real @ real.mean - r_syn @ synthetic.mean)
    assert statistics_distance(real, synthetic, RidgeFilter(0.1)).item() == pytest.approx(expected.item())


def test_joint_batches_equal_separate_runs(teacher, digits):
    """Batch 0 of an IPC-2 CFM run gets exactly the images of an IPC-1 run (same beta_max, same start)."""
    one = TeacherMatchingConfig("cfm-teacher", ipc=1, iterations=3, real_images=200)
    two = TeacherMatchingConfig("cfm-teacher", ipc=2, iterations=3, real_images=200)
    alone, _ = distill_with_teacher(digits.train, digits.info, teacher.net, one)
    joint, _ = distill_with_teacher(digits.train, digits.info, teacher.net, two)
    assert torch.equal(joint.labels[:10], torch.arange(10)) and torch.equal(joint.labels[10:], torch.arange(10))
    assert torch.allclose(joint.images[:10], alone.images, atol=1e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # inside torch
def test_compiled_loss_recovers_the_eager_images(teacher, digits):
    """``compile=True`` (the CLI's default) runs the same loss through torch.compile: same images up to float
    rounding."""
    config = TeacherMatchingConfig("cfm-teacher", ipc=2, iterations=3, real_images=200)
    eager, _ = distill_with_teacher(digits.train, digits.info, teacher.net, config)
    compiled, _ = distill_with_teacher(digits.train, digits.info, teacher.net, config, compile=True)
    assert compile_failure() is None
    assert torch.allclose(compiled.images, eager.images, atol=1e-4)


def test_matching_reduces_the_statistics_distance(teacher, digits):
    config = TeacherMatchingConfig("cfm-teacher", ipc=2, iterations=30, real_images=300, lr=0.05)
    real = real_statistics(teacher.net, digits.train.images[:300])
    start, labels = initial_images(digits.train, 10, config)
    before = batch_losses(teacher.net, start, labels, real, config.batch_filters(), config.eta)[1]
    synthetic, log = distill_with_teacher(digits.train, digits.info, teacher.net, config)
    after = batch_losses(teacher.net, synthetic.images, labels, real, config.batch_filters(), config.eta)[1]
    assert after["statistics"] < 0.7 * before["statistics"]
    assert after["ce"] < before["ce"]


def test_checkpoint_resumes_to_the_same_images(teacher, digits, tmp_path, monkeypatch):
    config = TeacherMatchingConfig("lowpass-teacher", ipc=1, iterations=6, real_images=100)
    straight, _ = distill_with_teacher(digits.train, digits.info, teacher.net, config)
    import distillset.engine.teacher_matching as module

    calls = {"n": 0}
    real_losses = module.batch_losses

    def stop_after_four(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 4:
            raise KeyboardInterrupt
        return real_losses(*args, **kwargs)

    path = tmp_path / "checkpoint.safetensors"
    monkeypatch.setattr(module, "batch_losses", stop_after_four)
    with pytest.raises(KeyboardInterrupt):
        distill_with_teacher(digits.train, digits.info, teacher.net, config, checkpoint=path, checkpoint_seconds=0)
    assert path.is_file()
    monkeypatch.setattr(module, "batch_losses", real_losses)
    other = TeacherMatchingConfig("lowpass-teacher", ipc=1, iterations=7, real_images=100)
    with pytest.raises(CheckpointMismatchError, match="another run"):
        distill_with_teacher(digits.train, digits.info, teacher.net, other, checkpoint=path)
    resumed, _ = distill_with_teacher(digits.train, digits.info, teacher.net, config, checkpoint=path)
    assert torch.allclose(resumed.images, straight.images, atol=1e-6)
    assert not path.exists()


def test_cli_distill_with_teacher_and_soft_label_evaluation(teacher, tmp_path):
    import json

    from typer.testing import CliRunner

    from distillset.cli import app

    runner = CliRunner()
    out = tmp_path / "run"
    missing = runner.invoke(app, ["distill", "--method", "cfm-teacher", "--dataset", "digits", "--out", str(out)])
    assert missing.exit_code == 2 and "without --teacher" in missing.output
    result = runner.invoke(app, ["distill", "--method", "cfm-teacher", "--teacher", str(teacher.path), "--dataset",
                                 "digits", "--ipc", "2", "--iterations", "2", "--param", "real_images=100",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "cfm-teacher" and manifest["teacher"]["sha256"] == teacher.manifest["sha256"]
    rerun = runner.invoke(app, ["distill", "--method", "cfm-teacher", "--teacher", str(teacher.path), "--dataset",
                                "digits", "--ipc", "2", "--iterations", "2", "--param", "real_images=100",
                                "--out", str(out)])
    assert rerun.exit_code == 0 and "already distilled" in rerun.output  # a finished set is kept
    assert json.loads((out / "manifest.json").read_text()) == manifest
    soft = ["--soft-labels", str(teacher.path), "--temperature", "2"]
    for extra in ([], [*soft, "--relabel", "fixed"], soft):
        evaluated = runner.invoke(app, ["evaluate", str(out), "--epochs", "1", "--models", "1", "--no-compile",
                                        "--precision", "fp32", *extra])
        assert evaluated.exit_code == 0, evaluated.output
    results = json.loads((out / "evaluation.json").read_text())
    labels = sorted((entry["labels"]["labels"], entry["labels"].get("relabel", "")) for entry in results.values())
    assert labels == [("hard", ""), ("soft", "augmented"), ("soft", "fixed")]
    assert [key for key in results if key.endswith("-aug")] == ["convnet3-e1-n1-s0-soft-" + teacher.manifest[
        "sha256"][:8] + "-T2-aug"]
    for entry in results.values():
        if entry["labels"]["labels"] == "soft":
            assert 0.0 < entry["labels"]["normalized_entropy"] < 1.0
            assert entry["labels"]["temperature"] == 2.0
            assert entry["labels"]["teacher_sha256"] == teacher.manifest["sha256"]
    flat = runner.invoke(app, ["evaluate", str(out), "--epochs", "1", "--models", "1", "--no-compile", "--precision",
                               "fp32", "--soft-labels", str(teacher.path), "--temperature", "1000"])
    assert flat.exit_code == 0 and "nearly uniform" in flat.output  # T = 1000 flattens any teacher's labels
    bad = runner.invoke(app, ["evaluate", str(out), "--epochs", "1", *soft, "--relabel", "crops"])
    assert bad.exit_code == 2 and "--relabel must be 'augmented' or 'fixed'" in bad.output
    elf = runner.invoke(app, ["evaluate", str(out), "--epochs", "1", "--elf", *soft])
    assert elf.exit_code == 2 and "add --relabel fixed" in elf.output


def test_normalized_entropy_of_soft_labels():
    from distillset.training.teachers import normalized_entropy

    assert normalized_entropy(torch.eye(4)) == pytest.approx(0.0)
    assert normalized_entropy(torch.full((3, 4), 0.25)) == pytest.approx(1.0)
    assert normalized_entropy(torch.tensor([[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])) == pytest.approx(0.25)


def test_relabel_loss_is_the_tempered_cross_entropy_of_the_teacher():
    from distillset.training import Relabel

    teacher_logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    student_logits = torch.tensor([[0.5, 0.5, 0.0], [1.0, -1.0, 2.0]])
    relabel = Relabel(lambda images: teacher_logits, temperature=2.0)
    target = torch.softmax(teacher_logits / 2, dim=1)
    by_hand = -(target * torch.log_softmax(student_logits / 2, dim=1)).sum(1).mean()
    assert relabel.loss(student_logits, torch.zeros(2, 1, 4, 4)) == pytest.approx(float(by_hand))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        Relabel(lambda images: teacher_logits, temperature=0.0)


def test_relabelled_training_follows_the_teacher_on_every_augmented_batch(digits):
    """Labels all say class 1, the teacher says class 0 on whatever it sees: the student learns class 0, and the
    teacher is shown the augmented batches, not the stored images."""
    from distillset.nets import get_network
    from distillset.training import EvalConfig, Relabel, train_classifier, training_identity

    images = digits.train.images[:40]
    train = type(digits.train)(images, torch.ones(40, dtype=torch.long))
    seen = []

    def teacher_logits(batch):
        seen.append(batch.clone())
        return torch.tensor([8.0] + [0.0] * 9).expand(len(batch), 10)

    relabel = Relabel(teacher_logits, identity="constant")
    config = EvalConfig(model="mlp", epochs=30, lr=0.05, batch_size=20, precision="fp32", compile=False)
    net = get_network("mlp", digits.info.channels, 10, digits.info.image_size, seed=0)
    generator = torch.Generator().manual_seed(0)
    assert training_identity(net, train, config, generator, relabel) != training_identity(net, train, config,
                                                                                          generator)
    train_classifier(net, train, config, generator=generator, device=torch.device("cpu"), relabel=relabel)
    with torch.no_grad():
        predictions = net.eval()(images).argmax(1)
    assert (predictions == 0).float().mean() > 0.9
    assert len(seen) == 2 * 31 and not any(torch.equal(batch, images[:20]) for batch in seen)


def test_benchmark_tables_with_a_teacher_expand_into_commands():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import plan

    tables = plan.tables()
    plan.groups_of(tables)  # no set is made two ways
    cfm = tables["cfm_teacher_fashion_mnist"]
    teacher = f"benchmarks/work/{cfm.teacher.path}"
    assert plan.shell(cfm.teacher.argv("benchmarks/work"), "distillset").endswith(f"--out {teacher}")
    distill = cfm.groups[0].argv("benchmarks/work")
    methods = "cfm-teacher,lowpass-teacher,highpass-teacher,dm-teacher"
    assert distill[:4] == ["distillset", "distill", "--method", methods]
    assert distill[-2:] == ["--teacher", teacher]
    soft = [row for row in cfm.rows if row.evaluation.soft_labels]
    assert {row.method for row in soft} == {"cfm-teacher", "lowpass-teacher", "highpass-teacher", "dm-teacher", "dm"}
    command = list(plan.iter_commands(soft[0], "benchmarks/work"))[-1]
    assert command.endswith(f"--soft-labels {teacher} --relabel augmented")
    cosine = [group for group in tables["cfm_fashion_mnist"].groups if group.lr_schedule == "cosine"]
    assert [group.ipc for group in cosine] == [10, 50] and cosine[0].key.endswith("-lrcosine")
    assert cosine[0].argv("w")[-5:-3] == ["--lr-schedule", "cosine"]
    elf = tables["cross_arch_elf_teacher"]
    ablation = elf.rows[-1].evaluation
    assert ablation.name(0).endswith("-elf-feature_targetnormalized-lambda_front0-teacher")
    assert f"teacher={teacher}" in ablation.argv("run", 0)
