"""The resumable table runner behind benchmarks/coreset.py and distill_table.py."""

import json
import sys
from pathlib import Path

import pytest

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

    # a rerun builds and trains nothing, and returns the same rows
    again = table.run_table("t", cells, _counting_builder(calls), num_models=2, epochs=2)
    assert len(calls) == 3 and again == rows

    # a cell lost after its models finished is rebuilt from the saved set and model records only
    (tables / "cells" / "t" / "digits-random-ipc1-it0-s0.json").unlink()
    record = tables / "cells" / "t" / "models" / "digits-random-ipc1-it0-s0-convnet3-e2-m0.json"
    stamp = json.loads(record.read_text())["accuracy"]
    rebuilt = table.run_table("t", cells[:1], _counting_builder(calls), num_models=2, epochs=2)
    assert len(calls) == 3 and rebuilt[0]["extra"]["accuracies"][0] == round(stamp, 2)
