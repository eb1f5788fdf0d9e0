import base64
import io
import json
import re
import shutil
import subprocess

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from distillset.artifacts import save_run
from distillset.cli import app
from distillset.data.base import ImageSet
from distillset.io import atomic_write_json
from distillset.report import build_report, evaluation_label, read_log

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _entry(model: str, mean: float, per_class: list[float], **config) -> dict:
    return {"config": {"model": model, "epochs": 10, **config}, "mean": mean, "std": 1.5, "n": 2,
            "per_class": per_class, "accuracy_reported": "final_epoch"}


@pytest.fixture
def runs(tmp_path):
    """A distilled run with a log and two evaluations (one with ELF and fair metrics), and a bare coreset run."""
    g = torch.Generator().manual_seed(0)
    dm, coreset = tmp_path / "dm", tmp_path / "random"
    save_run(dm, ImageSet(torch.randn(20, 1, 8, 8, generator=g), torch.arange(10).repeat_interleave(2)),
             method="dm<script>", dataset="digits", ipc=2, seed=0, config={"lr_img": 1.0}, wall_seconds=3.0)
    save_run(coreset, ImageSet(torch.randn(10, 1, 8, 8, generator=g), torch.arange(10)),
             method="random", dataset="digits", ipc=1, seed=0, config={}, wall_seconds=0.0)
    log = [{"iteration": i, "loss": 10.0 / (i + 1), "seconds": 0.1 * i} for i in range(0, 50, 10)]
    log.append({"iteration": 40, "eval_accuracy": 55.0, "eval_epochs": 20})
    (dm / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log) + '{"iteration": 5')  # cut-off line
    fair = {"accuracy_mean": 44.0, "accuracy_std": 1.0, "random_accuracy_mean": 40.0, "random_accuracy_std": 2.0,
            "ior_mean": 4.0, "ior_std": 1.0, "full_data_accuracy": 95.0, "hlr_mean": 51.0, "hlr_std": 1.0,
            "lrs_mean": 22.5, "lrs_std": 0.3}
    atomic_write_json(dm / "evaluation.json", {
        "convnet3-e10-n2-s0": _entry("convnet3", 61.25, [60.0] * 10),
        "resnet18-e10-n2-s0-elf": {**_entry("resnet18", 44.0, [float(c) for c in range(10)], elf={"lambda_front": 1}),
                                   "fair_metrics": fair},
    })
    atomic_write_json(coreset / "evaluation.json", {"convnet3-e10-n2-s0": _entry("convnet3", 50.0, [50.0] * 10)})
    return [dm, coreset]


def test_report_is_self_contained_with_tables_figures_and_manifests(runs, tmp_path):
    out = build_report(runs, tmp_path / "report.html", title="T", caption="made by the test")
    page = out.read_text()
    assert "http://" not in page and "https://" not in page and "<script>" not in page  # self-contained, escaped
    assert "dm&lt;script&gt; (dm)" in page and "made by the test" in page
    pngs = DATA_URI.findall(page)
    # 2 grids + 1 curve figure (only the DM run has a log) + 2 per-class bar charts
    assert page.count("<img ") == len(pngs) == 5
    for data in pngs:
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.verify()
        assert image.format == "PNG"
    assert "61.2 ± 1.5 (n=2)" in page and "50.0 ± 1.5 (n=2)" in page  # accuracy table, mean ± std
    assert "resnet18 + ELF (10 ep)" in page and "Fair metrics" in page and "22.5 ± 0.3" in page
    assert page.count("<details><summary>manifest.json</summary>") == 2 and "&quot;lr_img&quot;: 1.0" in page


def test_log_reader_and_labels(runs):
    records = read_log(runs[0] / "log.jsonl")
    assert len(records) == 6 and records[-1]["eval_accuracy"] == 55.0  # the cut-off line is skipped
    assert read_log(runs[1] / "log.jsonl") == []
    assert evaluation_label(_entry("mlp", 1.0, [])) == "mlp (10 ep)"
    assert evaluation_label({**_entry("mlp", 1.0, []), "accuracy_reported": "best_epoch"}) == "mlp (10 ep) [best_epoch]"


def test_cli_report_and_errors(runs, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["report", *map(str, runs), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    missing = runner.invoke(app, ["report", str(tmp_path / "nope"), "--out", str(tmp_path / "x.html")])
    assert missing.exit_code == 2 and "not a distillset run directory" in missing.output


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(runs, tmp_path):
    out = build_report(runs, tmp_path / "report.html")
    # A test-only copy records how many <img> the browser decoded (naturalWidth > 0) once the page loaded.
    probe = tmp_path / "probe.html"
    counter = ("<script>window.addEventListener('load', () => { document.body.dataset.decoded = "
               "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length; });</script>")
    probe.write_text(out.read_text().replace("</body>", counter + "</body>"))
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu"]
    dom = subprocess.run([*flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=60).stdout
    assert dom.count("<img ") == 5 and 'data-decoded="5"' in dom
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1000,1400", out.as_uri()],
                   capture_output=True, timeout=60, check=True)
    screenshot = Image.open(shot).convert("L")
    low, high = screenshot.getextrema()
    assert screenshot.size == (1000, 1400) and high - low > 100  # a rendered page, not a blank one
