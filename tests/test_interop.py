import json

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from distillset.artifacts import load_run, save_run
from distillset.cli import app
from distillset.data import dataset_info
from distillset.data.base import ImageSet
from distillset.interop import (
    InteropError,
    class_folder_names,
    detect_import_format,
    export_run,
    import_set,
    load_tensor_file,
)

DIGITS = dataset_info("digits")


def _set(soft: bool = False, per_class: int = 2) -> ImageSet:
    """Pixels on the 8-bit grid k/255, so a PNG round trip is exact up to float rounding."""
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (10 * per_class, 1, 8, 8), generator=g).float() / 255
    labels = torch.arange(10).repeat_interleave(per_class)
    soft_labels = torch.softmax(torch.randn(len(labels), 10, generator=g), 1) if soft else None
    return ImageSet(DIGITS.normalize(pixels), labels, soft_labels)


def _run(path, synthetic):
    save_run(path, synthetic, method="dm", dataset="digits", ipc=2, seed=0, config={}, wall_seconds=1.0)
    return path


@pytest.mark.parametrize("soft", [False, True])
def test_ddranking_export_and_import_round_trip_exactly(tmp_path, soft):
    synthetic = _set(soft)
    out = export_run(_run(tmp_path / "run", synthetic), tmp_path / "dd", "ddranking")
    images = torch.load(out / "images.pt", weights_only=True)
    labels = torch.load(out / "labels.pt", weights_only=True)
    assert torch.equal(images, synthetic.images)
    assert torch.equal(labels, synthetic.soft_labels if soft else synthetic.labels)
    assert (out / "hard_labels.pt").is_file() == soft  # class labels need not be the soft labels' argmax
    info = json.loads((out / "export.json").read_text())
    assert info["labels"] == ("soft" if soft else "hard") and info["normalization"]["mean"] == list(DIGITS.mean)
    import_set(out, tmp_path / "back", fmt="ddranking", dataset="digits")
    back, manifest = load_run(tmp_path / "back")
    assert torch.equal(back.images, synthetic.images) and torch.equal(back.labels, synthetic.labels)
    assert (back.soft_labels is not None) == soft
    assert manifest["kind"] == "imported" and manifest["ipc"] == 2 and len(manifest["source"]["sha256"]) == 64


def test_ddranking_without_labels_is_class_major(tmp_path):
    torch.save(torch.zeros(30, 1, 8, 8), tmp_path / "images.pt")
    import_set(tmp_path, tmp_path / "run", fmt="ddranking", dataset="digits")
    synthetic, _ = load_run(tmp_path / "run")
    assert synthetic.labels.tolist() == [c for c in range(10) for _ in range(3)]
    torch.save(torch.zeros(31, 1, 8, 8), tmp_path / "images.pt")
    with pytest.raises(InteropError, match="add labels.pt"):
        import_set(tmp_path, tmp_path / "run2", fmt="ddranking", dataset="digits")


def test_dm_result_file_import_picks_the_experiment(tmp_path):
    first, second = _set(), _set(per_class=1)
    path = tmp_path / "res_DM_digits_ConvNet_1ipc.pt"
    torch.save({"data": [[first.images, first.labels], [second.images, second.labels]],
                "accs_all_exps": {"ConvNet": [0.5, 0.6]}}, path)
    import_set(path, tmp_path / "run", fmt="dm", dataset="digits", experiment=1, method="dm-reference")
    synthetic, manifest = load_run(tmp_path / "run")
    assert torch.equal(synthetic.images, second.images) and torch.equal(synthetic.labels, second.labels)
    assert manifest["method"] == "dm-reference" and manifest["ipc"] == 1 and manifest["source"]["experiment"] == 1
    with pytest.raises(InteropError, match="holds 2 experiments"):
        import_set(path, tmp_path / "x", fmt="dm", dataset="digits", experiment=2)
    with pytest.raises(InteropError, match=r"'fashion-mnist' needs \(N, 1, 28, 28\)"):
        import_set(path, tmp_path / "x", fmt="dm", dataset="fashion-mnist")
    torch.save({"images": first.images}, tmp_path / "other.pt")
    with pytest.raises(InteropError, match="expected the reference result dict"):
        import_set(tmp_path / "other.pt", tmp_path / "x", fmt="dm", dataset="digits")


class Payload:
    """Not a tensor: unpickling it would run arbitrary code paths."""


def test_files_needing_arbitrary_unpickling_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"data": [[Payload(), torch.zeros(1)]]}, path)
    with pytest.raises(InteropError, match="weights_only=True"):
        load_tensor_file(path)
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    with pytest.raises(InteropError, match="not a readable torch file|refused"):
        load_tensor_file(tmp_path / "garbage.pt")


def test_image_folder_export_and_import_round_trip(tmp_path):
    synthetic = _set()
    out = export_run(_run(tmp_path / "run", synthetic), tmp_path / "folder", "imagefolder")
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == class_folder_names(DIGITS) and folders[3] == "3_3"
    first = Image.open(out / folders[0] / "00000.png")
    assert first.mode == "L" and first.size == (8, 8) and len(list((out / folders[0]).glob("*.png"))) == 2
    import_set(out, tmp_path / "back", fmt="imagefolder", dataset="digits")
    back, _ = load_run(tmp_path / "back")
    assert torch.equal(back.labels, synthetic.labels)
    assert torch.allclose(back.images, synthetic.images, atol=1e-5)


def test_image_folder_import_checks_sizes_and_uses_sorted_order_without_numbers(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / "set" / name).mkdir(parents=True)
        Image.new("L", (8, 8), 255).save(tmp_path / "set" / name / "a.png")
    import_set(tmp_path / "set", tmp_path / "run", fmt="imagefolder", dataset="digits")
    synthetic, _ = load_run(tmp_path / "run")
    assert synthetic.labels.tolist() == [0, 1]
    assert torch.allclose(DIGITS.denormalize(synthetic.images), torch.ones(2, 1, 8, 8), atol=1e-6)
    Image.new("L", (9, 8)).save(tmp_path / "set" / "dog" / "b.png")
    with pytest.raises(InteropError, match="9x8 px"):
        import_set(tmp_path / "set", tmp_path / "run2", fmt="imagefolder", dataset="digits")


def test_cli_export_and_import(tmp_path):
    run = _run(tmp_path / "run", _set())
    runner = CliRunner()
    exported = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "dd"), "--format", "ddranking"])
    assert exported.exit_code == 0, exported.output
    imported = runner.invoke(app, ["import", str(tmp_path / "dd"), "--format", "ddranking", "--dataset", "digits",
                                   "--out", str(tmp_path / "back")])
    assert imported.exit_code == 0, imported.output
    assert torch.equal(load_run(tmp_path / "back")[0].images, load_run(run)[0].images)
    bad = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "x"), "--format", "zip"])
    assert bad.exit_code == 2 and "unknown export format" in bad.output


def test_import_detects_the_format_from_what_is_there(tmp_path):
    run = _run(tmp_path / "run", _set())
    ddranking = export_run(run, tmp_path / "dd", "ddranking")
    folder = export_run(run, tmp_path / "folder", "imagefolder")
    assert detect_import_format(ddranking) == "ddranking" and detect_import_format(folder) == "imagefolder"
    torch.save({"data": [[torch.zeros(1)]]}, tmp_path / "res.pt")
    assert detect_import_format(tmp_path / "res.pt") == "dm"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InteropError, match="neither images.pt"):
        detect_import_format(tmp_path / "empty")
    with pytest.raises(InteropError, match="does not exist; pass a DM result file"):
        detect_import_format(tmp_path / "missing")
    runner = CliRunner()
    for source in (ddranking, folder):  # no --format: detected
        imported = runner.invoke(app, ["import", str(source), "--dataset", "digits", "--out",
                                       str(tmp_path / f"back-{source.name}")])
        assert imported.exit_code == 0, imported.output
        assert load_run(tmp_path / f"back-{source.name}")[0].labels.tolist() == load_run(run)[0].labels.tolist()
