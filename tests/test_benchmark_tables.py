"""The resumable table runner behind benchmarks/coreset.py and distill_table.py."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
common = pytest.importorskip("common")
table = pytest.importorskip("table")

from distillset.coreset import select_coreset  # noqa: E402


@pytest.fixture
def tables(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "CELLS", tmp_path / "cells")
    monkeypatch.setattr(table, "ARTIFACTS", tmp_path / "artifacts")
    monkeypatch.setattr(table, "WORK", tmp_path / "work")
    return tmp_path


def _counting_builder(calls: list[str]):
    def build(cell, splits, work):
        calls.append(cell.key)
        return select_coreset(splits, "random", cell.ipc, seed=cell.seed), {"method": "random"}

    return build


def test_run_table_resumes_and_writes_after_each_cell(tables):
    cells = [table.Cell("digits", "random", 1), table.Cell("digits", "random", 2, resample=True)]
    calls: list[str] = []
    written: list[int] = []
    rows = table.run_table("t", cells, _counting_builder(calls), num_models=2, epochs=2,
                           on_cell=lambda finished: written.append(len(finished)))
    assert written == [1, 2]
    # one set for the plain cell, one per model for the resampled one (seed + model index)
    assert calls == ["digits-random-ipc1-it0-s0", "digits-random-ipc2-it0-s0", "digits-random-ipc2-it0-s1"]
    by_ipc = {r["ipc"]: r for r in rows}
    assert by_ipc[2]["extra"]["sets"].startswith("one per model")
    assert len(by_ipc[1]["extra"]["accuracies"]) == 2 and by_ipc[1]["n"] == 2
    models = sorted(p.name for p in (tables / "cells" / "t" / "models").glob("*.json"))
    assert models == [f"digits-random-ipc1-it0-s0-convnet3-e2-m{i}.json" for i in range(2)] + [
        "digits-random-ipc2-it0-s0-convnet3-e2-m0.json", "digits-random-ipc2-it0-s1-convnet3-e2-m1.json"]
    assert not any((tables / "work" / "t" / "eval").iterdir())  # recorded models leave no training checkpoints
    # of a resampled cell's subsets only the first is stored (the others are rebuilt from their seed)
    assert table.set_saved("t", cells[1].set_cell(0)) and not table.set_saved("t", cells[1].set_cell(1))

    # a rerun builds and trains nothing, and returns the same rows
    again = table.run_table("t", cells, _counting_builder(calls), num_models=2, epochs=2)
    assert len(calls) == 3 and again == rows

    # a cell lost after its models finished is rebuilt from the saved set and model records only
    (tables / "cells" / "t" / "digits-random-ipc1-it0-s0.json").unlink()
    record = tables / "cells" / "t" / "models" / "digits-random-ipc1-it0-s0-convnet3-e2-m0.json"
    stamp = json.loads(record.read_text())["accuracy"]
    rebuilt = table.run_table("t", cells[:1], _counting_builder(calls), num_models=2, epochs=2)
    assert len(calls) == 3 and rebuilt[0]["extra"]["accuracies"][0] == round(stamp, 2)


def test_build_only_distils_and_leaves_the_models_to_a_later_run(tables):
    cells = [table.Cell("digits", "random", 1)]
    calls: list[str] = []
    assert table.run_table("t", cells, _counting_builder(calls), num_models=2, epochs=1, build_only=True) == []
    assert calls == ["digits-random-ipc1-it0-s0"] and table.set_saved("t", cells[0])
    assert not (tables / "cells" / "t" / "models").exists() or not any((tables / "cells" / "t" / "models").iterdir())
    rows = table.run_table("t", cells, _counting_builder(calls), num_models=2, epochs=1)
    assert len(calls) == 1 and rows[0]["n"] == 2  # the saved set is evaluated, not built again


def test_workers_share_a_table_through_claims(tables, capsys):
    cell = table.Cell("digits", "random", 1)
    calls: list[str] = []
    with table.claimed("w", f"{cell.key}.set") as mine:  # another worker is building the set
        assert mine
        assert table.run_table("w", [cell], _counting_builder(calls), num_models=2, epochs=1) == []
        assert calls == [] and "being built by another worker" in capsys.readouterr().out
    model = f"{cell.key}-convnet3-e1-m1"
    with table.claimed("w", f"{model}.eval"):  # another worker is training model 1
        with table.claimed("w", f"{model}.eval") as second:
            assert not second  # a claim is exclusive, also within one process
        assert table.run_table("w", [cell], _counting_builder(calls), num_models=2, epochs=1) == []
        assert "will write the cell" in capsys.readouterr().out
        recorded = sorted(p.name for p in (tables / "cells" / "w" / "models").glob("*.json"))
        assert recorded == [f"{cell.key}-convnet3-e1-m0.json"] and calls == [cell.key]
    # the claim is gone (the worker finished or died): the next run trains model 1 only and writes the cell
    rows = table.run_table("w", [cell], _counting_builder(calls), num_models=2, epochs=1)
    assert len(rows) == 1 and rows[0]["n"] == 2 and calls == [cell.key]
    assert f"{cell.key}-convnet3-e1-m1:" in capsys.readouterr().out


def test_distill_table_distils_cells_of_the_same_real_data_together(tables, monkeypatch):
    distill_table = pytest.importorskip("distill_table")
    monkeypatch.setitem(distill_table.FAST, "compile", False)
    cells = [table.Cell("digits", "random", 1, resample=True), table.Cell("digits", "dm", 1, iterations=2),
             table.Cell("digits", "hdd", 2, iterations=3), table.Cell("digits", "dm", 1, iterations=2, seed=1)]
    builder = distill_table.grouped_builder("g", cells)
    rows = table.run_table("g", cells, builder, num_models=1, epochs=1)
    assert len(rows) == 4
    manifests = {c.key: json.loads((tables / "artifacts" / "g" / c.key / "manifest.json").read_text())
                 for c in cells[1:]}
    together = [cells[1].key, cells[2].key]
    for key in together:
        assert manifests[key]["config"]["distilled_with"] == together
        # each set records its share of the runs' checkpointed step time
        assert manifests[key]["wall_seconds"] == pytest.approx(manifests[key]["config"]["group_seconds"] / 2, abs=0.1)
        assert manifests[key]["wall_seconds"] > 0
    assert manifests[cells[3].key]["wall_seconds"] == manifests[cells[3].key]["config"]["build_seconds"] > 0
    assert "distilled_with" not in manifests[cells[3].key]["config"]  # another seed: distilled alone

    from distillset.artifacts import load_run
    from distillset.data import load_dataset

    splits = load_dataset("digits")
    for cell in cells[1:3]:  # each set is exactly the set distilled alone
        alone, _ = distill_table.build(cell, splits, tables / "alone" / cell.key)
        grouped, _ = load_run(tables / "artifacts" / "g" / cell.key)
        assert torch.equal(grouped.images, alone.images)


def test_distill_table_leaves_group_members_claimed_by_another_worker(tables, monkeypatch):
    distill_table = pytest.importorskip("distill_table")
    monkeypatch.setitem(distill_table.FAST, "compile", False)
    cells = [table.Cell("digits", method, 1, iterations=1) for method in ("dm", "hdd", "csdm")]
    with table.claimed("busy", f"{cells[1].key}.set"):
        table.run_table("busy", cells, distill_table.grouped_builder("busy", cells), num_models=1, epochs=1)
    manifests = [tables / "artifacts" / "busy" / c.key / "manifest.json" for c in cells]
    assert not manifests[1].exists()  # left to the worker that holds it
    groups = [json.loads(manifests[i].read_text())["config"].get("distilled_with") for i in (0, 2)]
    assert groups == [[cells[0].key, cells[2].key]] * 2


def test_distill_table_caps_the_group_size(tables, monkeypatch):
    distill_table = pytest.importorskip("distill_table")
    monkeypatch.setitem(distill_table.FAST, "compile", False)
    cells = [table.Cell("digits", method, 1, iterations=1) for method in ("dm", "hdd", "csdm")]
    table.run_table("cap", cells, distill_table.grouped_builder("cap", cells, max_group=2), num_models=1, epochs=1)
    groups = [json.loads((tables / "artifacts" / "cap" / c.key / "manifest.json").read_text())["config"]
              .get("distilled_with") for c in cells]
    assert groups == [[cells[0].key, cells[1].key]] * 2 + [None]


def test_distill_table_groups_idm_cells_apart_from_dm_cells(tables, monkeypatch):
    distill_table = pytest.importorskip("distill_table")
    monkeypatch.setitem(distill_table.FAST, "compile", False)
    cells = [table.Cell("digits", "idm", 1, iterations=2), table.Cell("digits", "dm", 1, iterations=2),
             table.Cell("digits", "idm+hdd", 2, iterations=2), table.Cell("digits", "idm", 2, iterations=3)]
    table.run_table("q", cells, distill_table.grouped_builder("q", cells), num_models=1, epochs=1)
    groups = [json.loads((tables / "artifacts" / "q" / c.key / "manifest.json").read_text())["config"]
              .get("distilled_with") for c in cells]
    # IDM cells of equal length share the queue; DM and the longer IDM run are distilled alone
    assert groups == [[cells[0].key, cells[2].key], None, [cells[0].key, cells[2].key], None]


def test_distill_table_groups_cells_of_the_same_pruned_pool(tables, monkeypatch):
    distill_table = pytest.importorskip("distill_table")
    monkeypatch.setitem(distill_table.FAST, "compile", False)
    pruned = {"prune": "hyperbolic", "keep": 0.5}
    cells = [table.Cell("digits", "dm", 1, iterations=2, extra=pruned),
             table.Cell("digits", "hdd", 1, iterations=2, extra=pruned),
             table.Cell("digits", "dm", 1, iterations=2, extra={"prune": "random", "keep": 0.5})]
    table.run_table("p", cells, distill_table.grouped_builder("p", cells), num_models=1, epochs=1)
    groups = [json.loads((tables / "artifacts" / "p" / c.key / "manifest.json").read_text())["config"]
              .get("distilled_with") for c in cells]
    assert groups == [[cells[0].key, cells[1].key]] * 2 + [None]  # another pool: distilled alone

    from distillset.artifacts import load_run
    from distillset.data import load_dataset

    splits = load_dataset("digits")
    assert len(distill_table.real_pool(cells[0], splits)) < len(splits.train)
    alone, _ = distill_table.build(cells[1], splits, tables / "alone")
    assert torch.equal(load_run(tables / "artifacts" / "p" / cells[1].key)[0].images, alone.images)


def test_cross_arch_elf_variants_get_their_own_cells_and_labels():
    cross_arch_elf = pytest.importorskip("cross_arch_elf")
    from distillset.evaluate.elf import ELFConfig

    assert cross_arch_elf.parse_variant("") == {}
    overrides = cross_arch_elf.parse_variant("feature_loss=l2,lambda_front=0.1")
    assert overrides == {"feature_loss": "l2", "lambda_front": 0.1}
    with pytest.raises(SystemExit, match="key=value"):
        cross_arch_elf.parse_variant("lambda_front")
    elf = ELFConfig(feature_width=512, feature_epochs=2, feature_train_size=10000)
    assert cross_arch_elf.elf_tag(elf, "") == "elf-w512-fe2-fn10000"  # the reference rows keep their cell keys
    assert cross_arch_elf.elf_tag(elf, "feature_loss=l2") == "elf-w512-fe2-fn10000-feature-loss-l2"
    assert cross_arch_elf.row_label("resnet18", None) == "resnet18"
    assert cross_arch_elf.row_label("resnet18", "") == "resnet18 + ELF"
    assert cross_arch_elf.row_label("resnet18", "feature_loss=l2") == "resnet18 + ELF (feature_loss=l2)"


def test_example_report_takes_cross_arch_rows_of_the_same_set(tmp_path, monkeypatch):
    example_report = pytest.importorskip("example_report")
    row = {"model": "resnet18", "epochs": 1000, "n": 3, "mean": 70.0, "std": 1.0,
           "extra": {"set_sha256": "abc", "elf": True, "elf_config": {"lambda_front": 1.0}, "accuracies": [70.0],
                     "per_class": [70.0]}}
    plain = {**row, "model": "convnet3", "extra": {**row["extra"], "elf": False}}
    other_set = {**row, "extra": {**row["extra"], "set_sha256": "def"}}
    (tmp_path / "cross.json").write_text(json.dumps({"rows": [row, plain, other_set]}))
    monkeypatch.setattr(example_report, "RESULTS", tmp_path)
    entries = example_report.cross_arch_entries("cross", "abc", skip_model="convnet3")
    assert list(entries) == ["resnet18-elf-e1000-cross"]
    assert entries["resnet18-elf-e1000-cross"]["config"]["elf"] == {"lambda_front": 1.0}
    assert example_report.cross_arch_entries("missing", "abc", skip_model="convnet3") == {}


def test_a_cell_finished_in_another_table_is_reused_not_rerun(tables, monkeypatch):
    distill_table = pytest.importorskip("distill_table")
    monkeypatch.setitem(distill_table.FAST, "compile", False)
    dm, hdd = table.Cell("digits", "dm", 1, iterations=1), table.Cell("digits", "hdd", 1, iterations=1)
    table.run_table("first", [dm], distill_table.build, num_models=1, epochs=1)

    calls: list[str] = []
    builder = distill_table.grouped_builder("second", [dm, hdd], reuse=["first"])

    def counting(cell, splits, work):
        calls.append(cell.key)
        return builder(cell, splits, work)

    rows = table.run_table("second", [dm, hdd], counting, num_models=1, epochs=1, reuse=["first"])
    assert calls == [hdd.key]  # dm copied, and hdd distilled alone (not grouped with the reused dm)
    reused = next(r for r in rows if r["method"] == "dm")
    assert reused["extra"]["reused_from"] == "first"
    assert reused["mean"] == common.Cells("first").get(dm.key)["row"]["mean"]
    assert "distilled_with" not in json.loads(
        (tables / "artifacts" / "second" / hdd.key / "manifest.json").read_text())["config"]

    # another evaluation (epochs) is not the same cell: it runs
    calls.clear()
    table.run_table("third", [dm], counting, num_models=1, epochs=2, reuse=["first"])
    assert calls == [dm.key]


def test_objective_params_label_rows_run_with_param():
    row = {"extra": {"param_scale": 200, "imbalance": 0.1, "param_schedule_over": "slots"}}
    assert common.objective_params(row["extra"]) == "scale=200, schedule_over=slots"
    assert common.objective_params({"seed": 0}) == ""


def test_head_tail_averages_the_first_and_last_third_of_the_classes():
    distill_table = pytest.importorskip("distill_table")
    per_class = [90.0, 80.0, 70.0, 60.0, 50.0, 40.0, 30.0, 20.0, 10.0, 0.0]  # 10 classes: thirds of 4
    assert distill_table.head_tail(per_class) == (75.0, 15.0)
    assert distill_table.head_tail([1.0, 2.0, 3.0]) == (1.0, 3.0)


def test_progress_reports_groups_trainings_and_claims(tables, monkeypatch):
    progress = pytest.importorskip("progress")
    monkeypatch.setattr(progress, "WORK", tables / "work")
    monkeypatch.setattr(progress, "ARTIFACTS", tables / "artifacts")
    monkeypatch.setattr(progress, "CELLS", tables / "cells")
    # a lockstep group seen between two runs' log lines (one at iteration 40, one at 30) and a run of its own
    runs = {"digits-dm-ipc2-it100-s0": 40, "digits-hdd-ipc2-it100-s0": 30, "digits-x-ipc2-it100-s0": 90}
    for name, last in runs.items():
        log = [{"iteration": i, "seconds": 2.0 * i, "loss": 1.0} for i in range(10, last + 1, 10)]
        (tables / "work" / "t" / name).mkdir(parents=True)
        (tables / "work" / "t" / name / "log.jsonl").write_text("\n".join(map(json.dumps, log)))
    from distillset.io import atomic_save_tensors

    model_key = "digits-dm-ipc2-it100-s0-convnet3-e10-m0"
    atomic_save_tensors(tables / "work" / "t" / "eval" / model_key / "model0.safetensors", {"x": torch.zeros(1)},
                        metadata={"epoch": "7", "seconds": "120.0"})
    with table.claimed("t", f"{model_key}.eval") as mine:
        assert mine
        lines = progress.report("t")
    assert lines[1] == ("  distilling digits-hdd-ipc2-it100-s0, digits-dm-ipc2-it100-s0: iteration 30/100, 4.0 s/it, "
                        "~0.1 h left (stopped)")
    assert lines[2] == "  distilling digits-x-ipc2-it100-s0: iteration 90/100, 2.0 s/it, ~0.0 h left (stopped)"
    assert lines[3] == f"  training {model_key}: epoch 7, 2 min so far (running)"
    assert progress.report("t")[3].endswith("(stopped)")  # the claim ended with the block


def test_carry_takes_unfinished_work_through_git_and_back(tables, monkeypatch):
    carry = pytest.importorskip("carry")
    for name, value in {"WORK": tables / "work", "ARTIFACTS": tables / "artifacts", "CELLS": tables / "cells",
                        "CARRY": tables / "carry", "ROOT": tables}.items():
        monkeypatch.setattr(carry, name, value)
    from distillset.io import atomic_save_tensors

    work = tables / "work" / "t"
    files = {  # relative path -> tensors; the first three are unfinished work
        "digits-dm-ipc2-it100-s0/checkpoint.safetensors": {"synthetic": torch.rand(2, 3)},
        "eval/digits-dm-ipc2-it100-s0-convnet3-e10-m0/model0.safetensors": {"x": torch.rand(4)},
        "digits-hdd-ipc2-it100-s0/checkpoint.safetensors": {"synthetic": torch.rand(2, 3)},
        "digits-idm-ipc2-it100-s0/checkpoint.safetensors": {"synthetic": torch.rand(2), "queue.created": torch.ones(1)},
        "digits-big-ipc2-it100-s0/checkpoint.safetensors": {"synthetic": torch.rand(300_000)},  # 1.1 MB
        "eval/digits-dm-ipc1-it100-s0-convnet3-e10-m0/model0.safetensors": {"x": torch.rand(4)},
    }
    for path, tensors in files.items():
        atomic_save_tensors(work / path, tensors)
    (work / "digits-dm-ipc2-it100-s0" / "log.jsonl").write_text('{"iteration": 10}\n')
    (work / "digits-big-ipc2-it100-s0" / "log.jsonl").write_text('{"iteration": 10}\n')  # not without its checkpoint
    (work / "claims").mkdir()
    (work / "claims" / "digits-dm-ipc2-it100-s0.set").touch()
    (tables / "artifacts" / "t" / "digits-hdd-ipc2-it100-s0").mkdir(parents=True)  # this set is finished
    (tables / "artifacts" / "t" / "digits-hdd-ipc2-it100-s0" / "manifest.json").write_text("{}")
    (tables / "cells" / "t" / "models").mkdir(parents=True)  # and this model recorded
    (tables / "cells" / "t" / "models" / "digits-dm-ipc1-it100-s0-convnet3-e10-m0.json").write_text("{}")

    carried = carry.save(max_mb=1.0)
    expected = ["digits-dm-ipc2-it100-s0/checkpoint.safetensors", "digits-dm-ipc2-it100-s0/log.jsonl",
                "eval/digits-dm-ipc2-it100-s0-convnet3-e10-m0/model0.safetensors"]
    assert sorted(str(p) for p in carried) == sorted(f"t/{p}" for p in expected)
    assert sorted(str(p.relative_to(tables / "carry")) for p in (tables / "carry").rglob("*") if p.is_file()) == \
        sorted(f"t/{p}" for p in expected)

    # a fresh checkout: no work folder; restore brings back exactly the carried bytes
    originals = {p: (work / p).read_bytes() for p in expected}
    shutil.rmtree(tables / "work")
    assert sorted(str(p) for p in carry.restore()) == sorted(f"t/{p}" for p in expected)
    assert {p: (work / p).read_bytes() for p in expected} == originals
    # a run continued here is newer than its carried copy: a second restore leaves it alone
    (work / "digits-dm-ipc2-it100-s0" / "log.jsonl").write_text("continued\n")
    assert carry.restore() == []
    assert (work / "digits-dm-ipc2-it100-s0" / "log.jsonl").read_text() == "continued\n"

    # carried work this machine never restored is kept by the next save; finished work is dropped
    shutil.rmtree(work / "eval")
    (tables / "cells" / "t" / "models" / "digits-dm-ipc2-it100-s0-convnet3-e10-m0.json").write_text("{}")
    atomic_save_tensors(work / "eval" / "digits-x-ipc2-it100-s0-convnet3-e10-m1" / "model1.safetensors",
                        {"x": torch.rand(2)})
    shutil.rmtree(tables / "carry" / "t" / "digits-dm-ipc2-it100-s0")
    (tables / "carry" / "t" / "digits-y-ipc2-it100-s0").mkdir()
    (tables / "carry" / "t" / "digits-y-ipc2-it100-s0" / "checkpoint.safetensors").write_bytes(b"carried")
    shutil.rmtree(work / "digits-dm-ipc2-it100-s0")
    assert sorted(str(p) for p in carry.save(max_mb=1.0)) == [
        "t/digits-y-ipc2-it100-s0/checkpoint.safetensors",
        "t/eval/digits-x-ipc2-it100-s0-convnet3-e10-m1/model1.safetensors"]


def test_longtail_figure_computes_the_issue_bars_and_draws(tmp_path):
    figure = pytest.importorskip("longtail_figure")

    def row(method, mean, imbalance=None):
        extra = {"per_class": [mean] * 10, **({"imbalance": imbalance} if imbalance else {})}
        return {"method": method, "mean": mean, "std": 0.1, "extra": extra}

    rows = [row("dm", 80.0, 0.1), row("csdm", 81.0, 0.1), row("dm", 70.0, 0.005), row("csdm", 76.0, 0.005),
            row("dm", 83.0), row("csdm", 82.5), row("random", 75.0, 0.01)]
    table = figure.rows_by_ratio(rows)
    assert list(table) == [1.0, 0.1, 0.01, 0.005]
    assert figure.bars(table) == {"csdm_minus_dm": {1.0: -0.5, 0.1: 1.0, 0.005: 6.0},
                                  "drop_from_0.1_to_smallest": {"dm": 10.0, "csdm": 5.0}}
    figure.plot(table, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0


@pytest.mark.parametrize("script, unfinished, unfinished_key", [
    # would distil and evaluate DM (2000 iterations, 5 x 1000 epochs)
    ("distill_table", ["--methods", "dm"], "digits-dm-ipc1-it2000-s0"),
    ("coreset", ["--methods", "random", "herding"], "digits-herding-ipc1-it0-s0"),  # would select a herding set
])
def test_report_only_rewrites_the_result_files_from_the_cells(tables, monkeypatch, script, unfinished, unfinished_key):
    benchmark = pytest.importorskip(script)
    monkeypatch.setattr(common, "RESULTS", tables / "results")
    table.run_table("r", [table.Cell("digits", "random", 1, resample=True)],
                    _counting_builder([]), num_models=2, epochs=1)
    (tables / "results").mkdir()
    (tables / "results" / "r.json").write_text(json.dumps({"command": f"python benchmarks/{script}.py --x"}))
    monkeypatch.setattr(sys, "argv", [f"{script}.py", "--name", "r", "--dataset", "digits", *unfinished,
                                      "--ipc", "1", "--report-only"])
    benchmark.main()
    assert sorted(p.name for p in (tables / "artifacts" / "r").iterdir()) == ["digits-random-ipc1-it0-s0"]
    assert not (tables / "work" / "r" / unfinished_key).exists()
    result = json.loads((tables / "results" / "r.json").read_text())
    assert result["command"] == f"python benchmarks/{script}.py --x"  # kept: the command that ran the cells
    assert [row["method"] for row in result["rows"]] == ["random"] and result["rows"][0]["n"] == 2
    assert len(result["rows"][0]["extra"]["machines"]) == 1
    assert "models trained on:" in (tables / "results" / "r.md").read_text()


def test_results_of_a_table_filled_by_several_commands_list_them_all(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    commands = ["python b.py --ipc 10", "python b.py --ipc 50 --build-only", "python b.py --ipc 10"]
    rows = [{"method": method, "extra": {"command": c}} for method, c in zip(["dm", "cfm", "lowpass"], commands)]
    common.write_results("t", "python b.py --ipc 50", rows, [], 1.0, markdown="table\n")
    result = json.loads((tmp_path / "t.json").read_text())
    assert result["command"] == "python b.py --ipc 50"
    assert result["commands"] == ["python b.py --ipc 10", "python b.py --ipc 50 --build-only"]
    assert "- `python b.py --ipc 50 --build-only`" in (tmp_path / "t.md").read_text()
    # a table from one command keeps the plain format
    common.write_results("t", "python b.py --ipc 10", rows[:1], [], 1.0, markdown="table\n")
    assert "commands" not in json.loads((tmp_path / "t.json").read_text())
    assert "Commands behind" not in (tmp_path / "t.md").read_text()


def test_distill_table_seeds_make_cells_of_their_own_and_a_seed_column(tables, monkeypatch):
    distill_table = pytest.importorskip("distill_table")
    monkeypatch.setattr(common, "RESULTS", tables / "results")
    seeded = [table.Cell("digits", "random", 1, seed=seed, resample=True) for seed in (0, 5)]
    table.run_table("seeds", seeded, _counting_builder([]), num_models=1, epochs=1)
    built: list[list[str]] = []

    def record_cells(name, cells, *args, **kwargs):
        built.append([cell.key for cell in cells])
        return []

    monkeypatch.setattr(distill_table, "run_table", record_cells)
    monkeypatch.setattr(sys, "argv", ["distill_table.py", "--name", "seeds", "--dataset", "digits", "--methods",
                                      "dm", "--ipc", "1", "--iterations", "3", "--seeds", "0", "5",
                                      "--prune", "random", "--keep", "0.5"])
    distill_table.main()
    assert built == [["digits-dm-ipc1-it3-s0", "digits-dm-ipc1-it3-s0-keep0.5-prunerandom",
                      "digits-dm-ipc1-it3-s5", "digits-dm-ipc1-it3-s5-keep0.5-prunerandom"]]
    monkeypatch.setattr(sys, "argv", ["distill_table.py", "--name", "seeds", "--dataset", "digits", "--methods",
                                      "random", "--ipc", "1", "--seeds", "0", "5", "--report-only"])
    distill_table.main()
    lines = (tables / "results" / "seeds.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| method"))
    assert "| real pool | seed |" in header
    assert [line.split("|")[5].strip() for line in lines if line.startswith("| random")] == ["0", "5"]
