"""benchmarks/Snakefile end to end on a tiny digits table: sets, models, result files, resume, no rework.

Slow-ish: eight `distillset` processes (about 50 s of CPU on 2 cores)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("snakemake")  # the `bench` extra (also in `test`)

SNAKEFILE = Path(__file__).resolve().parents[1] / "benchmarks" / "Snakefile"
TABLE = """
dataset: digits
iterations: 2
evaluate: {models: 2, epochs: 1}
cells:
  - {methods: [random], ipc: 1, resample: true}
  - {methods: [dm, hdd], rows: [dm], ipc: 1}
"""


def _snakemake(tmp_path: Path, *args: str) -> str:
    command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--cores", "2", "--directory", str(tmp_path),
               "--config", f"tables={tmp_path / 'tables'}", "work=work", "results=results", "--", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.mark.slow
def test_the_workflow_builds_a_table_resumes_a_lost_model_and_redoes_nothing(tmp_path):
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "tiny.yaml").write_text(TABLE)
    _snakemake(tmp_path, "results/tiny.json")
    result = json.loads((tmp_path / "results" / "tiny.json").read_text())
    assert result["command"] == "snakemake -s benchmarks/Snakefile --cores 2 results/tiny.json"
    assert [(row["method"], row["n"]) for row in result["rows"]] == [("random", 2), ("dm", 2)]
    random, dm = result["rows"]
    assert random["extra"]["commands"][:2] == [
        f"distillset coreset --method random --dataset digits --ipc 1 --seed {seed} "
        f"--out work/sets/digits-random-ipc1-it0-s{seed}/random" for seed in (0, 1)]
    assert dm["extra"]["commands"][0] == ("distillset distill --method dm,hdd --dataset digits --ipc 1 --seed 0 "
                                          "--out work/sets/digits-dm+hdd-ipc1-it2-s0 --iterations 2 --resume")
    assert dm["iterations"] == 2 and len(dm["extra"]["accuracies"]) == 2
    hdd = tmp_path / "work" / "sets" / "digits-dm+hdd-ipc1-it2-s0" / "hdd" / "manifest.json"
    assert hdd.is_file()  # made by the same command as the DM set
    assert "| dm | 1 |" in (tmp_path / "results" / "tiny.md").read_text()

    # a run stopped before a model and the table were written: that model is trained, nothing else is redone
    lost = tmp_path / "work" / "evals" / "digits-dm+hdd-ipc1-it2-s0" / "dm" / "convnet3-e1-s1-fp32" / "evaluation.json"
    lost.unlink()
    (tmp_path / "results" / "tiny.json").unlink()
    stamp = hdd.stat().st_mtime_ns
    log = _snakemake(tmp_path, "results/tiny.json")
    assert log.count("localrule evaluate:") == 1 and "rule distill_" not in log
    assert lost.is_file() and hdd.stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "results" / "tiny.json").read_text())["rows"][0] == random
    assert "Nothing to be done" in _snakemake(tmp_path, "results/tiny.json")
