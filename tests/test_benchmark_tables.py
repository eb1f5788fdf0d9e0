"""The benchmark tables' plumbing: table configs (plan), result rows (collect), report and figure helpers."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import collect  # noqa: E402
import common  # noqa: E402
import example_report  # noqa: E402
import longtail_figure  # noqa: E402
import plan  # noqa: E402


def _table(tmp_path: Path, text: str) -> plan.Table:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    return plan.load_table(path)


TABLE = """
dataset: digits
iterations: 20
distill: {real_precision: bf16, compile: true}
evaluate: {models: 2, epochs: 3}
cells:
  - {methods: [random], ipc: [1, 10], resample: true}
  - {methods: [dm, hdd], rows: [dm], ipc: 10, prune: [hyperbolic, random], keep: 0.2, params: {k: 1}}
"""


def test_a_table_config_expands_into_rows_groups_and_commands(tmp_path):
    table = _table(tmp_path, TABLE)
    assert [(r.method, r.group.ipc, r.extra.get("prune")) for r in table.rows] == [
        ("random", 1, None), ("random", 10, None), ("dm", 10, "hyperbolic"), ("dm", 10, "random")]
    random10 = table.rows[1]
    # the random baseline: a subset (coreset command) per model, model m seeded 100 * seed + m
    assert [m.group.key for m in random10.models] == ["digits-random-ipc10-it0-s0", "digits-random-ipc10-it0-s1"]
    assert [m.seed for m in random10.models] == [0, 1]
    assert random10.models[1].group.argv("W") == [
        "distillset", "coreset", "--method", "random", "--dataset", "digits", "--ipc", "10", "--seed", "1",
        "--out", "W/sets/digits-random-ipc10-it0-s1/random"]
    # methods of a cell are one distill command (one real pass); only the `rows` methods are rows
    dm = table.rows[2]
    assert {m.group for m in dm.models} == {dm.group} and dm.group.methods == ("dm", "hdd")
    assert dm.group.argv("W") == [
        "distillset", "distill", "--method", "dm,hdd", "--dataset", "digits", "--ipc", "10", "--seed", "0",
        "--out", "W/sets/digits-dm+hdd-ipc10-it20-s0-hyperbolic0.2-k1", "--iterations", "20", "--resume",
        "--prune-rule", "hyperbolic", "--prune-ratio", "0.2", "--param", "k=1", "--compile",
        "--real-precision", "bf16"]
    assert dm.models[1].path == "evals/digits-dm+hdd-ipc10-it20-s0-hyperbolic0.2-k1/dm/convnet3-e3-s1-fp32"
    assert dm.extra == {"prune": "hyperbolic", "keep": 0.2, "param_k": 1, "seed": 0}
    commands = list(plan.iter_commands(dm, "W"))
    assert commands[0].startswith("distillset distill --method dm,hdd") and len(commands) == 3
    assert commands[2] == ("distillset evaluate W/evals/digits-dm+hdd-ipc10-it20-s0-hyperbolic0.2-k1/dm/"
                           "convnet3-e3-s1-fp32 --model convnet3 --num-models 1 --epochs 3 --seed 1 --precision fp32 "
                           "--no-compile")


def test_a_cell_can_set_its_own_number_of_models(tmp_path):
    table = _table(tmp_path, TABLE.replace("rows: [dm],", "rows: [dm], models: 1,"))
    assert [len(row.models) for row in table.rows] == [2, 2, 1, 1]


def test_a_table_config_with_an_unknown_field_names_it(tmp_path):
    with pytest.raises(ValueError, match=r"unknown cell field\(s\) \['ipcs'\]"):
        _table(tmp_path, "dataset: digits\ncells:\n  - {methods: [dm], ipcs: [10]}\n")


def test_two_tables_making_one_set_differently_are_refused(tmp_path):
    one = _table(tmp_path, "dataset: digits\ncells:\n  - {methods: [dm], ipc: 1}\n")
    other = _table(tmp_path, "dataset: digits\ndistill: {compile: true}\ncells:\n  - {methods: [dm], ipc: 1}\n")
    assert len(plan.groups_of({"a": one, "b": one})) == 1
    with pytest.raises(ValueError, match="different settings"):
        plan.groups_of({"a": one, "b": other})


def test_the_published_tables_parse():
    tables = plan.tables()
    assert {"dm_digits", "dm_fashion_mnist", "csdm_longtail", "cross_arch_elf"} <= set(tables)
    plan.groups_of(tables)  # no set is made two ways
    cross = tables["cross_arch_elf"]
    assert [(r.evaluation.model, r.evaluation.elf is not None) for r in cross.rows] == [
        ("convnet3", False), ("resnet18", False), ("resnetap10", False), ("resnet18", True), ("resnetap10", True)]


def _records(work: Path, row: plan.Row, accuracies: list[float]) -> None:
    for model, accuracy in zip(row.models, accuracies, strict=True):
        (work / model.set_path).mkdir(parents=True, exist_ok=True)
        (work / model.set_path / "manifest.json").write_text(json.dumps(
            {"dataset": "digits", "ipc": row.group.ipc, "wall_seconds": 2.0, "config": {"iterations": 20},
             "tensors": {"sha256": "abc"}}))
        (work / model.path).mkdir(parents=True)
        (work / model.path / "evaluation.json").write_text(json.dumps({"convnet3-e3-n1-s0": {
            "accuracies": [accuracy], "per_class": [accuracy] * 10, "train_seconds": [1.5]}}))


def test_collect_keeps_raw_values_and_the_table_rounds_once(tmp_path):
    table = _table(tmp_path, TABLE)
    row = table.rows[2]
    # mean 82.8549, std 0.1549: 82.9 ± 0.2, where rounding to 2 decimals first (82.85 ± 0.15) gives 82.8 ± 0.1
    _records(tmp_path / "w", row, [82.7, 83.0098])
    result = collect.result_row(row, tmp_path / "w", "benchmarks/work")
    assert result["mean"] == pytest.approx(82.8549) and result["std"] == pytest.approx(0.1549)
    assert result["extra"]["accuracies"] == [82.7, 83.0098] and result["extra"]["build_seconds"] == 2.0
    assert result["extra"]["eval_seconds"] == 3.0 and result["iterations"] == 20 and result["n"] == 2
    assert result["extra"]["commands"][0].startswith("distillset distill --method dm,hdd")
    assert "| 82.9 ± 0.2 |" in collect.markdown([result], [])


def test_head_tail_averages_the_first_and_last_third_of_the_classes():
    per_class = [90.0, 80.0, 70.0, 60.0, 50.0, 40.0, 30.0, 20.0, 10.0, 0.0]  # 10 classes: thirds of 4
    assert collect.head_tail(per_class) == (75.0, 15.0)
    assert collect.head_tail([1.0, 2.0, 3.0]) == (1.0, 3.0)


def test_objective_params_label_rows_run_with_param():
    row = {"extra": {"param_scale": 200, "imbalance": 0.1, "param_schedule_over": "slots"}}
    assert common.objective_params(row["extra"]) == "scale=200, schedule_over=slots"
    assert common.objective_params({"seed": 0}) == ""


def test_a_computed_cell_is_stored_with_its_seconds_and_not_computed_again(tmp_path):
    cells, calls = common.Cells("t", root=tmp_path), []
    first = cells.computed("a", lambda: calls.append(1) or [1, 2], "t")
    again = cells.computed("a", lambda: calls.append(1) or [3], "t")
    assert calls == [1] and first["per_rep"] == again["per_rep"] == [1, 2] and first["seconds"] >= 0


def test_write_results_writes_the_json_and_markdown(tmp_path):
    common.write_results("t", "python b.py", [{"method": "dm"}], [], 1.04, markdown="table\n", results=tmp_path)
    result = json.loads((tmp_path / "t.json").read_text())
    assert result["command"] == "python b.py" and result["rows"] == [{"method": "dm"}]
    assert result["wall_seconds"] == 1.0 and set(result) >= {"commit", "machine", "date", "paper"}
    assert (tmp_path / "t.md").read_text().endswith("Wall time: 1.0 s\n\ntable\n")


def test_example_report_names_a_rows_published_set_and_takes_cross_arch_rows(tmp_path, monkeypatch):
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
    pruned = {"dataset": "fashion-mnist", "method": "dm", "ipc": 10, "iterations": 2000,
              "extra": {"seed": 0, "prune": "random", "keep": 0.2, "accuracies": [1.0]}}
    assert example_report.set_key(pruned) == "fashion-mnist-dm-ipc10-it2000-s0-keep0.2-prunerandom"


def test_longtail_figure_computes_its_two_bars_and_draws(tmp_path):
    def row(method, mean, imbalance=None):
        extra = {"per_class": [mean] * 10, **({"imbalance": imbalance} if imbalance else {})}
        return {"method": method, "mean": mean, "std": 0.1, "extra": extra}

    rows = [row("dm", 80.0, 0.1), row("csdm", 81.0, 0.1), row("dm", 70.0, 0.005), row("csdm", 76.0, 0.005),
            row("dm", 83.0), row("csdm", 82.5), row("random", 75.0, 0.01)]
    table = longtail_figure.rows_by_ratio(rows)
    assert list(table) == [1.0, 0.1, 0.01, 0.005]
    assert longtail_figure.bars(table) == {"csdm_minus_dm": {1.0: -0.5, 0.1: 1.0, 0.005: 6.0},
                                           "drop_from_0.1_to_smallest": {"dm": 10.0, "csdm": 5.0}}
    longtail_figure.plot(table, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0


def test_collect_merge_adds_the_finished_rows_and_keeps_the_files_other_rows(tmp_path, monkeypatch):
    table_path = tmp_path / "digits_table.yaml"
    table_path.write_text(TABLE)
    table = plan.load_table(table_path)
    random1, random10, dm_hyperbolic, dm_random = table.rows
    for row, accuracy in ((dm_hyperbolic, 80.0), (random1, 50.0)):
        _records(tmp_path / "w", row, [accuracy, accuracy + 2])
    earlier = collect.result_row(dm_hyperbolic, tmp_path / "w", "W")  # replaced: same key
    kept = {**earlier, "method": "cfm", "extra": {"build_seconds": 1.0, "commands": ["old command"]}}
    common.write_results("digits_table", "old command", [kept, earlier], [], 100.0, results=tmp_path)
    (tmp_path / "w" / dm_hyperbolic.models[0].path / "evaluation.json").write_text(json.dumps(
        {"m": {"accuracies": [90.0], "per_class": [90.0] * 10, "train_seconds": [1.5]}}))
    monkeypatch.setattr(sys, "argv", ["collect.py", str(table_path), "--work", str(tmp_path / "w"),
                                      "--results", str(tmp_path), "--command", "new command", "--merge"])
    collect.main()
    written = json.loads((tmp_path / "digits_table.json").read_text())
    # the unfinished rows (random IPC 10, dm on the random-pruned pool) are left out, the old cfm row is kept
    assert [(r["method"], r["ipc"], r["mean"]) for r in written["rows"]] == [
        ("cfm", 10, 81.0), ("random", 1, 51.0), ("dm", 10, 86.0)]
    assert written["commands"] == ["old command", "new command"]
    assert written["wall_seconds"] == 100.0 + 2.0 + 3.0 + 2 * 2.0 + 3.0
    assert "- `old command`" in (tmp_path / "digits_table.md").read_text()


def test_elf_label_names_the_settings_that_differ_from_elfs_defaults():
    assert common.elf_label({}) == ""
    assert common.elf_label({"elf": True, "elf_config": {"teacher": "T", "lambda_front": 1.0, "feature_width": 512}}) \
        == "ELF"
    assert common.elf_label({"elf": True, "elf_config": {"teacher": "T", "feature_target": "normalized",
                                                         "lambda_front": 0}}) \
        == "ELF (feature_target=normalized, lambda_front=0)"
