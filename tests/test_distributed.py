"""Scale-out: class sharding over torchrun processes (gloo on CPU) gives the single-process result bit for bit.

Two torchrun launches of 2 processes: the CLI (``torchrun -m distillset distill``) with DM, HDD and CSDM in
lockstep, and tests/torchrun_worker.py (IDM and IDM+HDD, evaluation split over ranks, resuming a
single-process checkpoint). The single-process references run here with one thread, as torchrun gives each
worker (``OMP_NUM_THREADS=1``): kernels are then the same, and so is every bit.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distillset.artifacts import load_run
from distillset.data.arrays import open_array, should_cache, write_array
from distillset.engine import Distiller, config_for_method, run_together
from distillset.engine.distributed import Ranks, check_shardable, class_block, rank_device, ranks_from_env
from distillset.evaluate import evaluate_synthetic

sys.path.insert(0, str(Path(__file__).parent))
import torchrun_worker  # noqa: E402

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
CLI_COMMON = dict(ipc=2, iterations=4, batch_real=32, real_precision="fp32", compile=False)
CLI_METHODS = ("dm", "hdd", "csdm")


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _torchrun(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "DISTILLSET_COMPILE": "0", "DISTILLSET_PRECISION": "fp32"}
    done = subprocess.run(TORCHRUN + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_torchrun_cli_distill_equals_one_process(tmp_path, digits, one_thread):
    _torchrun(["-m", "distillset", "distill", "--dataset", "digits", "--method", ",".join(CLI_METHODS), "--ipc", "2",
               "--iterations", "4", "--batch-real", "32", "--precision", "fp32", "--no-compile",
               "--out", str(tmp_path / "runs")], tmp_path)
    configs = [config_for_method(method, **CLI_COMMON) for method in CLI_METHODS]
    alone = run_together([Distiller(digits.train, digits.info, config) for config in configs])
    for method, expected in zip(CLI_METHODS, alone, strict=True):
        sharded, manifest = load_run(tmp_path / "runs" / method)
        assert manifest["processes"] == 2
        assert torch.equal(sharded.images, expected.images), method
        assert torch.equal(sharded.labels, expected.labels)


def test_torchrun_idm_evaluation_and_resume_equal_one_process(tmp_path, digits, one_thread):
    worker = torchrun_worker
    head = Distiller(digits.train, digits.info, config_for_method("dm", **{**worker.RESUME, "iterations": 2}),
                     out_dir=tmp_path / "resume")
    head.run()  # a single-process checkpoint at iteration 2, resumed to 4 by two processes
    _torchrun([str(Path(worker.__file__)), str(tmp_path)], tmp_path)
    results = torch.load(tmp_path / "results.pt")
    idm = run_together([Distiller(digits.train, digits.info, config_for_method(m, **worker.IDM))
                        for m in ("idm", "idm+hdd")])
    assert torch.equal(results["idm"], idm[0].images)
    assert torch.equal(results["idm+hdd"], idm[1].images)
    assert results["accuracies"] == evaluate_synthetic(idm[0], digits.test, digits.info, worker.EVAL).accuracies
    straight = Distiller(digits.train, digits.info, config_for_method("dm", **worker.RESUME)).run()
    assert torch.equal(results["resumed"], straight.images)


def test_ranks_come_from_the_torchrun_environment():
    assert ranks_from_env({}) == Ranks(0, 1, 0)
    assert ranks_from_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == Ranks(3, 8, 1)
    with pytest.raises(ValueError, match="inconsistent"):
        ranks_from_env({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="integers"):
        ranks_from_env({"RANK": "x"})
    with pytest.raises(ValueError, match="--device cuda"):
        rank_device("cuda:1", Ranks(0, 2, 0))
    assert rank_device("cpu", Ranks(1, 2, 1)) == torch.device("cpu")


def test_classes_split_into_contiguous_blocks_covering_all():
    classes = list(range(10))
    blocks = [class_block(classes, rank, 4) for rank in range(4)]
    assert blocks == [[0, 1], [2, 3, 4], [5, 6], [7, 8, 9]]
    assert class_block(classes, 0, 1) == classes


@pytest.mark.parametrize(("objective", "params", "per_class", "ce", "reason"), [
    ("cfm", {}, False, 0.0, "not known to split"),
    ("lowpass", {}, False, 0.0, "not known to split"),
    ("hdd", {"feature_scale": "unit-mean-norm"}, False, 0.0, "mean norm"),
    ("csdm", {}, True, 0.5, "once per class step"),
    ("dm", {}, False, 0.5, "CE term"),
])
def test_objectives_that_couple_classes_are_refused(objective, params, per_class, ce, reason):
    with pytest.raises(ValueError, match=reason):
        check_shardable(objective, params, step_per_class=per_class, ce_weight=ce)
    check_shardable("hdd", {"feature_scale": 2.0}, step_per_class=True, ce_weight=0.5)  # IDM+HDD shards


def test_memory_mapped_real_images_give_the_same_run(tmp_path, digits):
    path = write_array(digits.train, tmp_path)
    assert write_array(digits.train, tmp_path) == path  # written once
    mapped = open_array(path, digits.train.labels)
    assert isinstance(mapped.images, torch.Tensor) and torch.equal(mapped.images, digits.train.images)
    config = config_for_method("dm", ipc=1, iterations=2, batch_real=16)
    expected = Distiller(digits.train, digits.info, config).run().images
    assert torch.equal(Distiller(mapped, digits.info, config, cache_real=False).run().images, expected)
    assert should_cache(digits.train, None) and not should_cache(digits.train, False)


def test_cli_no_cache_memory_maps_the_real_images_with_the_same_result(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from distillset.cli import app

    monkeypatch.setenv("DISTILLSET_CACHE", str(tmp_path / "cache"))
    args = ["distill", "--dataset", "digits", "--ipc", "1", "--iterations", "2", "--batch-real", "16",
            "--precision", "fp32", "--no-compile"]
    for flag in ("--cache", "--no-cache"):
        result = CliRunner().invoke(app, [*args, flag, "--out", str(tmp_path / flag)])
        assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "cache" / "arrays").glob("images-*.npy"))) == 1
    assert torch.equal(load_run(tmp_path / "--cache")[0].images, load_run(tmp_path / "--no-cache")[0].images)
