"""Every figure README and docs quote traces to a result row (benchmarks/figures.py), rounded once."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import figures  # noqa: E402

# one accuracy row whose mean and std, rounded to 2 decimals first, would print 82.8 ± 0.1 instead of 82.8 ± 0.2
ROW = {"method": "hdd", "ipc": 10, "metric": "test_accuracy", "mean": 82.78, "std": 0.15,
       "extra": {"accuracies": [83.03, 82.74, 82.86, 82.59, 82.68], "round_medians": [1.1358, 1.3782]}}
RESULTS = {"t": {"rows": [ROW], "paper": [{"method": "dm", "mean": 83.0, "std": 0.1, "source": "reference"}]}}


def test_readme_and_docs_tables_are_the_ones_written_from_the_result_files():
    files = figures.regenerated(figures.load_results())
    assert {path.name for path in files} >= {"README.md", "coreset.md", "hdd.md", "csdm.md", "evaluation.md"}
    assert [path.name for path, text in files.items() if path.read_text() != text] == []


def test_every_measured_figure_in_readme_and_docs_matches_a_row():
    results = figures.load_results()
    problems = {path.name: figures.unmatched(path.read_text(), results) for path in figures.checked_files()}
    assert {name: found for name, found in problems.items() if found} == {}


def test_a_figure_rounded_twice_or_mistyped_matches_no_row():
    assert figures.raw(ROW) == pytest.approx((82.78, 0.1527), abs=1e-4)
    assert figures.unmatched("DM+HDD 82.8 ± 0.2, paper 83.0 ± 0.1", RESULTS) == []
    assert figures.unmatched("DM+HDD 82.8 ±\n0.1", RESULTS) == ["82.8 ±\n0.1"]  # rounded twice
    assert figures.unmatched("(83.03 / 82.74 / 82.86 / 82.59 /\n82.68)", RESULTS) == []
    assert figures.unmatched("(83.03 / 82.74 / 82.81 / 82.59 / 82.68)", RESULTS) == [
        "83.03 / 82.74 / 82.81 / 82.59 / 82.68"]
    assert figures.unmatched("round medians 1.14–1.38 s", RESULTS) == []
    assert figures.unmatched("0.92–1.38 s as the speed drifts", RESULTS) == ["0.92–1.38"]
    assert figures.unmatched("about 0.1–0.15 s per image, about 1.5 ± 0.5 points", RESULTS) == []  # estimates


def test_a_quoted_row_must_be_unique():
    rows = figures.Rows({"t": {"rows": [ROW, {**ROW, "ipc": 50}], "paper": []}})
    assert rows.acc("t", method="hdd", ipc=10) == "82.8 ± 0.2"
    with pytest.raises(LookupError, match="2 rows of t match"):
        rows.acc("t", method="hdd")


def test_a_generated_block_is_replaced_between_its_markers():
    text = f"intro\n{figures.START}\nold\n{figures.END}\noutro\n"
    assert figures.replace_block(text, "NEW") == "intro\nNEW\noutro\n"
    start, end = figures.doc_markers("pruning")
    assert figures.replace_block(f"a {start} old {end} b", "NEW", (start, end)) == "a NEW b"
    with pytest.raises(ValueError, match="lacks the markers"):
        figures.replace_block("no markers", "NEW")


def _row(model: str, mean: float, n: int = 3, **elf: object) -> dict:
    extra = {"accuracies": [mean] * n}
    if elf:
        extra.update(elf=True, elf_config={"teacher": "T", **elf})
    return {"model": model, "method": "dm", "ipc": 10, "mean": mean, "std": 0.0, "n": n, "extra": extra}


def test_the_teacher_elf_table_puts_each_row_under_its_elf_settings():
    rows = [_row("resnetap10", 80.0), _row("resnetap10", 81.0, feature_target="normalized"),
            _row("resnetap10", 70.0, n=1), _row("resnetap10", 75.0, n=1, feature_target="normalized", lambda_front=0)]
    rows[2]["extra"].update(elf=True, elf_config={"teacher": "T"})  # raw targets, the default
    lines = {line.split(" | ")[0].lstrip("| "): line for line in figures.elf_teacher_table(rows)}
    assert lines["ResNetAP-10, channel-normalised targets"].endswith(
        "| 80.0 ± 0.0 (n = 3) | 81.0 ± 0.0 (n = 3) | 75.0 ± 0.0 (n = 1) |")
    assert lines["ResNetAP-10, raw targets"].endswith("| 80.0 ± 0.0 (n = 3) | 70.0 ± 0.0 (n = 1) | — |")
    assert lines["ConvNet-3 (the distillation architecture)"].endswith("| — | — | — |")


def test_the_cfm_teacher_table_has_hard_and_soft_columns_per_ipc():
    hard = {**_row("convnet3", 77.0), "method": "cfm-teacher", "iterations": 1000}
    soft = {**hard, "mean": 78.5, "extra": {"labels": {"labels": "soft"}}}
    other_ipc = {**hard, "ipc": 50, "mean": 85.0, "iterations": 500}
    dm = {**_row("convnet3", 82.0), "iterations": 2000}  # its own steps stay out of the header
    header, _, cfm, *rest = figures.cfm_teacher_table([hard, soft, other_ipc, dm])
    assert header.count("IPC 10 (1000 steps)") == 2 and header.count("IPC 50 (500 steps)") == 2
    assert cfm == "| `cfm-teacher` | 77.0 ± 0.0 | 78.5 ± 0.0 | 85.0 ± 0.0 | — |"
    *filters, dm_line = rest
    assert all(line.endswith("| — | — | — | — |") for line in filters)
    assert dm_line.endswith("| 82.0 ± 0.0 | — | — | — |")
