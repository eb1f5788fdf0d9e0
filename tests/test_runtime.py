"""The fast defaults: precision detection, compilation with an eager fallback, threads."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch

from distillset import runtime


@pytest.fixture
def fresh_compile_state(monkeypatch):
    """Each test starts as a process in which torch.compile has not failed yet."""
    monkeypatch.setattr(runtime, "_compile_failure", None)


@pytest.fixture
def auto_env(monkeypatch):
    """No process-wide override of the precision default (the suite sets DISTILLSET_PRECISION=fp32)."""
    monkeypatch.delenv(runtime.PRECISION_ENV, raising=False)


@pytest.mark.parametrize("fast", [True, False])
def test_auto_precision_is_bf16_exactly_where_the_hardware_has_it(monkeypatch, auto_env, fast):
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: fast)
    assert runtime.resolve_precision("auto", "cpu") == ("bf16" if fast else "fp32")
    assert runtime.resolve_precision("fp32", "cpu") == "fp32"  # an explicit choice always wins
    assert runtime.resolve_precision("bf16", "cpu") == "bf16"
    x = torch.randn(4, 8)
    with runtime.precision_autocast(torch.device("cpu"), "auto"):
        y = x @ torch.randn(8, 3)
    assert y.dtype == (torch.bfloat16 if fast else torch.float32)
    assert x.dtype == torch.float32  # inputs (parameters, synthetic images) stay fp32


def test_precision_environment_override_and_bad_values(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    monkeypatch.setenv(runtime.PRECISION_ENV, "fp32")
    assert runtime.resolve_precision("auto", "cpu") == "fp32"
    assert runtime.resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="auto, fp32, bf16"):
        runtime.resolve_precision("fp16", "cpu")
    monkeypatch.setenv(runtime.PRECISION_ENV, "half")
    with pytest.raises(ValueError, match="'half'"):
        runtime.resolve_precision("auto", "cpu")


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="needs /proc/cpuinfo")
def test_bf16_detection_agrees_with_the_cpu_flags():
    flags = set(Path("/proc/cpuinfo").read_text().split())
    assert runtime.cpu_has_bf16() == any(flag in flags for flag in runtime.CPU_BF16_FLAGS)


def test_compile_default_follows_the_environment(monkeypatch):
    monkeypatch.delenv(runtime.COMPILE_ENV, raising=False)
    assert runtime.default_compile() is True
    for off in ("0", "false", "OFF"):
        monkeypatch.setenv(runtime.COMPILE_ENV, off)
        assert runtime.default_compile() is False


def test_a_failing_compiler_falls_back_to_eager_with_one_warning(fresh_compile_state):
    """A real compiler failure (Inductor pointed at a C++ compiler that does not exist): the call still returns
    the eager result, one RuntimeWarning is given for the whole process, later compilations are skipped and
    the runtime record says compiled code did not run."""
    import torch._inductor.config as inductor_config

    def double_plus_one(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * 2 + 1

    x = torch.randn(16)
    with inductor_config.patch({"cpp.cxx": ("/nonexistent/c++",), "fx_graph_cache": False}), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrapped = runtime.compile_or_eager(double_plus_one)
        assert isinstance(wrapped, runtime.CompiledOrEager)
        first = wrapped(x)
        second = runtime.compile_or_eager(lambda t: t - 1)(x)  # after a failure: eager, no new attempt
        again = wrapped(x)
    torch._dynamo.reset()
    assert torch.equal(first, double_plus_one(x)) and torch.equal(again, first)
    assert torch.equal(second, x - 1)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "torch.compile failed" in messages[0] and "--no-compile" in messages[0]
    assert "compiler" in runtime.compile_failure().lower()
    record = runtime.runtime_record("cpu", "fp32", compile=True)
    assert record["compile"] is False and record["compile_fallback"] == runtime.compile_failure()


def test_an_error_of_the_code_itself_is_not_taken_for_a_compiler_failure(monkeypatch, fresh_compile_state):
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)  # "compiled" = the same code

    def broken(x: torch.Tensor) -> torch.Tensor:
        raise ValueError("bad input shape")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning may be given
        with pytest.raises(ValueError, match="bad input shape"):
            runtime.compile_or_eager(broken)(torch.zeros(1))
    assert runtime.compile_failure() is None
    assert runtime.compile_or_eager(broken, enabled=False) is broken


def test_threads_follow_the_available_cores_unless_omp_says_otherwise(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert 1 <= runtime.available_cores() <= (os.cpu_count() or 1)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert runtime.configure_threads() == runtime.available_cores()
        torch.set_num_threads(1)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert runtime.configure_threads() == 1  # left as the user set it
    finally:
        torch.set_num_threads(before)


def test_runtime_record_names_what_ran(monkeypatch, auto_env, fresh_compile_state):
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    record = runtime.runtime_record("cpu", "auto", compile=True)
    assert record["precision"] == "bf16" and record["compile"] is True and "compile_fallback" not in record
    assert record["threads"] == torch.get_num_threads() and record["bf16_hardware"] is True
    assert runtime.runtime_record("cpu", "auto", compile=False)["compile"] is False


# ----------------------------------------------------------------------------- the defaults in use


def test_bf16_real_pass_moves_the_synthetic_images_as_fp32_does(digits):
    """DM with its real-feature pass in bf16 (the default on bf16 hardware) against fp32: after 5 iterations the
    synthetic images differ by under 5 % of their fp32 update (measured: about 1 %), and they stay fp32."""
    from distillset.engine import Distiller, config_for_method

    def distilled(precision: str) -> tuple[torch.Tensor, torch.Tensor]:
        config = config_for_method("dm", ipc=2, iterations=5, real_precision=precision, compile=False)
        distiller = Distiller(digits.train, digits.info, config)
        start = distiller.stored.detach().clone()
        for _ in range(5):
            distiller.step()
        assert distiller.config.real_precision == precision and distiller.stored.dtype == torch.float32
        return start, distiller.stored.detach()

    (start, reference), (_, fast) = distilled("fp32"), distilled("bf16")
    update, gap = (reference - start).norm(), (fast - reference).norm()
    assert 0 < gap < 0.05 * update


def test_cli_defaults_resolve_and_the_manifest_records_what_ran(tmp_path, monkeypatch, auto_env,
                                                                fresh_compile_state):
    from typer.testing import CliRunner

    from distillset.cli import app

    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    runner = CliRunner()
    base = ["distill", "--method", "dm", "--dataset", "digits", "--ipc", "1", "--iterations", "2", "--no-compile"]
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "fast")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "fast" / "manifest.json").read_text())
    assert manifest["config"]["real_precision"] == "bf16" and manifest["config"]["compile"] is False
    assert manifest["runtime"]["precision"] == "bf16" and manifest["runtime"]["compile"] is False
    assert manifest["runtime"]["threads"] == torch.get_num_threads()
    result = runner.invoke(app, [*base, "--precision", "fp32", "--out", str(tmp_path / "exact")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "exact" / "manifest.json").read_text())["runtime"]["precision"] == "fp32"
    bad = runner.invoke(app, [*base, "--precision", "fp16", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "auto, fp32, bf16" in bad.output
    # --models is a number of networks everywhere; architectures go to --model
    wrong = runner.invoke(app, ["evaluate", str(tmp_path / "fast"), "--models", "convnet3", "--epochs", "1"])
    assert wrong.exit_code == 2 and "--model convnet3" in wrong.output
