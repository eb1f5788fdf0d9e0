"""The command line end to end on the embedded digits dataset."""

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from distillset.artifacts import load_run
from distillset.cli import app

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    return result


@pytest.fixture(scope="module")
def dm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "dm"
    result = invoke("distill", "--method", "dm", "--dataset", "digits", "--ipc", "2", "--iterations", "6",
                    "--checkpoint-every", "3", "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


def test_datasets_and_methods_list():
    result = invoke("datasets")
    assert result.exit_code == 0 and "digits" in result.output and "fashion-mnist" in result.output
    result = invoke("methods")
    assert result.exit_code == 0
    for name in ("dm", "hdd", "idm", "idm+hdd", "herding", "kcenter"):
        assert name in result.output


def test_distill_writes_a_verified_run_and_log(dm_run):
    manifest = json.loads((dm_run / "manifest.json").read_text())
    assert manifest["method"] == "dm" and manifest["ipc"] == 2 and manifest["num_images"] == 20
    assert (dm_run / "checkpoint.safetensors").is_file()
    log = [json.loads(line) for line in (dm_run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["iteration"] == 6 and all("loss" in r for r in log)


def test_resume_after_finish_is_a_no_op_and_other_settings_are_refused(dm_run):
    result = invoke("distill", "--method", "dm", "--dataset", "digits", "--ipc", "2", "--iterations", "6",
                    "--out", str(dm_run), "--resume")
    assert result.exit_code == 0, result.output
    result = invoke("distill", "--method", "dm", "--dataset", "digits", "--ipc", "3", "--iterations", "6",
                    "--out", str(dm_run), "--resume")
    assert result.exit_code == 2 and "different settings" in result.output


def test_evaluate_and_inspect(dm_run):
    result = invoke("evaluate", str(dm_run), "--model", "convnet3", "--models", "2", "--epochs", "3")
    assert result.exit_code == 0, result.output
    evaluation = json.loads((dm_run / "evaluation.json").read_text())
    (entry,) = evaluation.values()
    assert entry["n"] == 2 and len(entry["per_class"]) == 10 and entry["accuracy_reported"] == "final_epoch"
    result = invoke("inspect", str(dm_run))
    assert result.exit_code == 0 and (dm_run / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_interrupted_evaluation_resumes_after_its_tested_models(dm_run, monkeypatch):
    from distillset.evaluate import protocol
    from distillset.io import RunDir

    tested = protocol.test_accuracy
    calls = []

    def stop_at_second_model(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return tested(*args, **kwargs)

    monkeypatch.setattr(protocol, "test_accuracy", stop_at_second_model)
    args = ("evaluate", str(dm_run), "--models", "2", "--epochs", "2", "--seed", "5")
    result = invoke(*args)
    assert result.exit_code != 0
    work = RunDir(dm_run).evaluation_work / "convnet3-e2-n2-s5"
    assert sorted(p.name for p in work.iterdir()) == ["model0.json"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert len(calls) == 3  # the first model was not tested (nor trained) again
    assert json.loads((dm_run / "evaluation.json").read_text())["convnet3-e2-n2-s5"]["n"] == 2
    assert not work.exists()


@pytest.mark.parametrize("per_class", [False, True])
def test_spectrum_plots_real_and_synthetic_ffc_eigenvalues(dm_run, tmp_path, per_class):
    out = tmp_path / "spectrum.png"
    result = invoke("spectrum", str(dm_run), "--out", str(out), "--real-per-class", "40",
                    *(["--per-class"] if per_class else []))
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    spectra = json.loads(out.with_suffix(".json").read_text())["spectra"]
    assert len(spectra) == (10 if per_class else 1)
    for panel in spectra.values():
        real, (synthetic,) = panel["real"], panel["synthetic"].values()
        assert len(real) == len(synthetic) and real == sorted(real, reverse=True)

        def rank(values):
            return sum(v > 1e-9 * max(values) for v in values)

        # 2 images per class: the synthetic FFC has rank <= 2 per class (20 pooled); the real one far more.
        assert rank(synthetic) <= (2 if per_class else 20) < rank(real)


def test_spectrum_compares_runs_and_draws_the_cfm_beta_schedule(dm_run, tmp_path):
    cfm = tmp_path / "cfm"
    result = invoke("distill", "--method", "cfm", "--dataset", "digits", "--ipc", "1", "--iterations", "2",
                    "--param", "beta_start=0.5", "--out", str(cfm))
    assert result.exit_code == 0, result.output
    out = tmp_path / "compare.png"
    result = invoke("spectrum", str(dm_run), str(cfm), "--out", str(out), "--real-per-class", "40")
    assert result.exit_code == 0, result.output
    written = json.loads(out.with_suffix(".json").read_text())
    (panel,) = written["spectra"].values()
    assert set(panel["synthetic"]) == set(written["runs"]) == {"dm", "cfm"}
    assert sum(v > 1e-9 for v in panel["synthetic"]["cfm"]) <= 10  # IPC 1: rank <= 10 pooled
    real_trace = sum(panel["real"])
    expected_levels = {"cfm \u03b2 start": 0.5 * real_trace, "cfm \u03b2 end": 1e-3 * real_trace}
    assert written["levels"] == pytest.approx(expected_levels)
    assert "cfm: synthetic/real eigenvalue ratio" in result.output
    lt_run = tmp_path / "lt"
    result = invoke("coreset", "--method", "random", "--dataset", "digits-lt", "--imbalance", "0.1", "--ipc", "1",
                    "--out", str(lt_run))
    assert result.exit_code == 0, result.output
    result = invoke("spectrum", str(dm_run), str(lt_run), "--out", str(out))  # another dataset: refused
    assert result.exit_code == 2 and "same dataset" in result.output


def test_coreset_command(tmp_path):
    out = tmp_path / "herding"
    result = invoke("coreset", "--method", "herding", "--dataset", "digits", "--ipc", "3", "--out", str(out),
                    "--feature-epochs", "1")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["num_images"] == 30


def test_clear_errors(tmp_path, dm_run):
    result = invoke("distill", "--method", "nope", "--dataset", "digits", "--out", str(tmp_path / "x"))
    assert result.exit_code == 2 and "unknown method 'nope'" in result.output and "idm+hdd" in result.output
    result = invoke("distill", "--dataset", "no-such-set", "--out", str(tmp_path / "x"))
    assert result.exit_code == 2 and "choose one of" in result.output
    result = invoke("evaluate", str(tmp_path))
    assert result.exit_code == 2 and "not a distillset run directory" in result.output
    tampered = tmp_path / "tampered"
    shutil.copytree(dm_run, tampered)  # the module's run stays intact for the other tests
    tensors = tampered / "synthetic.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-2] ^= 0x01
    tensors.write_bytes(bytes(data))
    result = invoke("evaluate", str(tampered), "--epochs", "1")
    assert result.exit_code == 2 and "sha256 mismatch" in result.output
    assert invoke("inspect", str(dm_run)).exit_code == 0


def test_distill_several_methods_in_one_command(tmp_path):
    out = tmp_path / "together"
    result = invoke("distill", "--method", "dm,hdd", "--dataset", "digits", "--ipc", "1", "--iterations", "2",
                    "--out", str(out))
    assert result.exit_code == 0, result.output
    for name in ("dm", "hdd"):
        manifest = json.loads((out / name / "manifest.json").read_text())
        assert manifest["method"] == name and manifest["distilled_with"] == ["dm", "hdd"]
    alone = tmp_path / "alone"
    assert invoke("distill", "--method", "hdd", "--dataset", "digits", "--ipc", "1", "--iterations", "2",
                  "--out", str(alone)).exit_code == 0
    together_set, alone_set = load_run(out / "hdd")[0], load_run(alone)[0]  # the files differ in their manifests
    assert torch.equal(together_set.images, alone_set.images) and torch.equal(together_set.labels, alone_set.labels)
    result = invoke("distill", "--method", "dm,idm", "--dataset", "digits", "--iterations", "1", "--out", str(out))
    assert result.exit_code == 2 and "network_source" in result.output and "Run them separately" in result.output
    result = invoke("distill", "--method", "dm,dm", "--dataset", "digits", "--out", str(out))
    assert result.exit_code == 2 and "different methods" in result.output


@pytest.mark.parametrize("rule", ["hyperbolic", "hyperbolic-spread", "random"])
def test_distill_from_a_pruned_real_pool(tmp_path, rule):
    out = tmp_path / rule
    result = invoke("distill", "--method", "hdd", "--dataset", "digits", "--ipc", "1", "--iterations", "2",
                    "--prune-ratio", "0.2", "--prune-rule", rule, "--out", str(out))
    assert result.exit_code == 0, result.output
    prune = json.loads((out / "manifest.json").read_text())["prune"]
    assert prune["rule"] == rule and prune["keep_ratio"] == 0.2
    assert 0.18 * 1437 <= prune["kept"] <= 0.22 * 1437
    result = invoke("distill", "--dataset", "digits", "--prune-ratio", "0.2", "--prune-rule", "nope",
                    "--out", str(tmp_path / "bad"))
    assert result.exit_code == 2 and "unknown pruning rule" in result.output


def test_parse_key_values_reads_json_values_and_names_a_bad_item():
    from distillset.registry import parse_key_values

    assert parse_key_values(["lr-img=0.5", "flag=true", "loss=l2"]) == {"lr_img": 0.5, "flag": True, "loss": "l2"}
    with pytest.raises(ValueError, match="expects key=value, got 'oops'"):
        parse_key_values(["oops"])


def test_demo_distils_compares_with_random_and_reports(tmp_path):
    """`make demo`'s command, tiny: with no Fashion-MNIST under --data-root it falls back to the embedded digits."""
    out = tmp_path / "demo"
    args = ("demo", "--out", str(out), "--data-root", str(tmp_path / "no-data"), "--ipc", "1", "--iterations", "3",
            "--epochs", "2", "--num-models", "1")
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "demo dataset: digits (embedded fallback)" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "digits" and summary["iterations"] == 3
    assert {"dm", "random"} <= set(summary) and summary["dm"]["n"] == 1 and len(summary["random"]["accuracies"]) == 1
    report = (out / "report.md").read_text()
    assert "| dm: 1 synthetic image(s) per class" in report and "| random: 1 real image(s) per class" in report
    assert (out / "dm.png").stat().st_size > 0 and (out / "random.png").stat().st_size > 0
    assert (out / "dm" / "manifest.json").is_file() and (out / "random" / "manifest.json").is_file()
    # a rerun resumes the finished distillation (no new iterations) and writes the same set
    first = (out / "dm" / "synthetic.safetensors").read_bytes()
    assert invoke(*args).exit_code == 0
    assert (out / "dm" / "synthetic.safetensors").read_bytes() == first


def test_typed_objective_and_queue_settings_reach_the_manifest(tmp_path):
    out = tmp_path / "idm"
    result = invoke("distill", "--method", "idm+hdd", "--dataset", "digits", "--ipc", "1", "--iterations", "1",
                    "--batch-real", "8", "--queue", "train_steps=1", "--queue", "train_batch=8",
                    "--param", "weight=50", "--out", str(out))
    assert result.exit_code == 0, result.output
    config = json.loads((out / "manifest.json").read_text())["config"]
    assert config["objective_params"]["weight"] == 50.0 and config["objective_params"]["curvature_k"] == 2.4
    assert config["queue"]["push_interval"] == 5 and config["queue"]["train_steps"] == 1  # IPC-1 preset + flag
    assert config["batch_real"] == 8
    result = invoke("distill", "--method", "hdd", "--dataset", "digits", "--param", "curvature=2",
                    "--out", str(tmp_path / "x"))
    assert result.exit_code == 2 and "has no parameter curvature" in result.output and "curvature_k" in result.output
    result = invoke("distill", "--method", "idm", "--dataset", "digits", "--queue", "size=3",
                    "--out", str(tmp_path / "y"))
    assert result.exit_code == 2 and "unknown queue setting size" in result.output and "push_interval" in result.output


def test_a_finished_evaluation_is_reported_not_trained_again(dm_run, monkeypatch):
    from distillset.evaluate import protocol
    from distillset.evaluate.records import EvaluationRecords, evaluation_key

    args = ("evaluate", str(dm_run), "--models", "1", "--epochs", "1", "--seed", "9")
    assert invoke(*args).exit_code == 0
    key = evaluation_key("convnet3", 1, 1, 9)
    recorded = EvaluationRecords(dm_run).get(key)
    assert recorded is not None and recorded["n"] == 1 and not EvaluationRecords(dm_run).work_dir(key).exists()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished evaluation was trained again")

    monkeypatch.setattr(protocol, "train_classifier", no_training)
    result = invoke(*args)
    assert result.exit_code == 0 and "recorded in" in result.output
    assert EvaluationRecords(dm_run).get(key) == recorded


def test_evaluation_keys():
    from distillset.evaluate.records import evaluation_key

    assert evaluation_key("convnet3", 1000, 5, 0) == "convnet3-e1000-n5-s0"
    assert evaluation_key("resnet18", 300, 3, 1, elf=True, precision="bf16", suffix="soft-ab12cd34-T1") == (
        "resnet18-e300-n3-s1-elf-bf16-soft-ab12cd34-T1")
    minimax = evaluation_key("convnet6", 2000, 3, 0, protocol="minimax", suffix="px64")
    assert minimax == "minimax-convnet6-e2000-n3-s0-px64"
