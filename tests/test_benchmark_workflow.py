"""benchmarks/Snakefile end to end on a tiny digits table: sets, models, result files, resume, no rework.

Slow-ish: four `distillset` processes (about 30 s of CPU)."""

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
  - {methods: [dm, hdd], rows: [dm], ipc: 1}
"""


def _snakemake(tmp_path: Path, *args: str) -> str:
    command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--cores", "2", "--directory", str(tmp_path),
               "--config", f"tables={tmp_path / 'tables'}", "work=work", "results=results", "--", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.mark.slow
def test_the_workflow_builds_a_table_resumes_a_lost_model_and_redoes_nothing(tmp_path):
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "tiny.yaml").write_text(TABLE)
    _snakemake(tmp_path, "results/tiny.json")
    result = json.loads((tmp_path / "results" / "tiny.json").read_text())
    assert result["command"] == "snakemake -s benchmarks/Snakefile --cores 2 results/tiny.json"
    assert [(row["method"], row["n"]) for row in result["rows"]] == [("dm", 2)]
    (dm,) = result["rows"]
    assert dm["extra"]["commands"][0] == ("distillset distill --method dm,hdd --dataset digits --ipc 1 --seed 0 "
                                          "--out work/sets/digits-dm+hdd-ipc1-it2-s0 --iterations 2 --resume "
                                          "--no-compile --real-precision fp32")
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
    again = json.loads((tmp_path / "results" / "tiny.json").read_text())["rows"][0]
    # the same commands, and the retrained model (seeded 1) reaches the same accuracy as before
    assert again["extra"]["commands"] == dm["extra"]["commands"]
    assert again["extra"]["accuracies"] == dm["extra"]["accuracies"]
    assert "Nothing to be done" in _snakemake(tmp_path, "results/tiny.json")
