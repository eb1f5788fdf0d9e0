"""`distillset demo` (report.run_demo): the embedded fallback shows the method's point and says what it means."""

from __future__ import annotations

import json

from distillset.report import DEMO_IPC, run_demo


def test_demo_on_the_digits_compares_one_image_per_class_and_explains(digits, tmp_path):
    out = tmp_path / "demo"
    summary = run_demo(out, digits, iterations=3, epochs=2, num_models=2, precision="fp32", compile=False,
                       echo=lambda line: None)
    assert summary["ipc"] == DEMO_IPC["digits"] == 1  # at IPC 10 random digits score as well as distilled ones
    assert summary["dm"]["n"] == 2 and summary["random"]["n"] == 2
    assert summary["random"]["config"]["new_draw_per_model"] is True
    assert summary["gain_points"] == summary["dm"]["mean"] - summary["random"]["mean"]
    assert summary["runtime"]["precision"] == "fp32" and summary["evaluation"]["precision"] == "fp32"
    report = (out / "report.md").read_text()
    assert "## What the numbers mean" in report and "IPC 1" in report and "a new draw per network" in report
    assert f"{abs(summary['gain_points']):.1f} points" in report
    assert (out / "report.html").stat().st_size > 0 and (out / "dm.png").is_file() and (out / "random.png").is_file()
    evaluation = json.loads((out / "dm" / "evaluation.json").read_text())
    assert list(evaluation.values())[0]["mean"] == summary["dm"]["mean"]
    manifest = json.loads((out / "dm" / "manifest.json").read_text())
    assert manifest["runtime"]["precision"] == "fp32" and manifest["config"]["ipc"] == 1
