import json

import pytest
import torch

from distillset.artifacts import load_run, read_manifest, save_run
from distillset.data.base import ImageSet
from distillset.io import ArtifactError, atomic_write_json


def _set(soft: bool = False) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(6, 1, 4, 4, generator=g)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    return ImageSet(images, labels, torch.softmax(torch.randn(6, 3, generator=g), 1) if soft else None)


def _save(path, synthetic):
    return save_run(path, synthetic, method="dm", dataset="digits", ipc=2, seed=3,
                    config={"lr_img": 1.0}, wall_seconds=1.5)


@pytest.mark.parametrize("soft", [False, True])
def test_round_trip_keeps_tensors_and_manifest(tmp_path, soft):
    synthetic = _set(soft)
    _save(tmp_path / "run", synthetic)
    loaded, manifest = load_run(tmp_path / "run")
    assert torch.equal(loaded.images, synthetic.images)
    assert torch.equal(loaded.labels, synthetic.labels)
    assert (loaded.soft_labels is None) == (not soft)
    if soft:
        assert torch.equal(loaded.soft_labels, synthetic.soft_labels)
    assert manifest["method"] == "dm" and manifest["ipc"] == 2 and manifest["seed"] == 3
    assert manifest["config"] == {"lr_img": 1.0}
    assert len(manifest["tensors"]["sha256"]) == 64
    assert manifest["environment"]["torch"] == torch.__version__


def test_tampered_tensor_file_is_refused(tmp_path):
    _save(tmp_path, _set())
    path = tmp_path / "synthetic.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # flip one pixel byte
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        load_run(tmp_path)


def test_tampered_manifest_hash_is_refused(tmp_path):
    _save(tmp_path, _set())
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["tensors"]["sha256"] = "0" * 64
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="modified or corrupted"):
        load_run(tmp_path)


def test_missing_and_corrupt_manifest_errors(tmp_path):
    with pytest.raises(ArtifactError, match="not a distillset run directory"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_manifest(tmp_path)


def test_manifest_cannot_point_outside_the_run(tmp_path):
    _save(tmp_path / "run", _set())
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    manifest["tensors"]["file"] = "../elsewhere.safetensors"
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="missing"):
        load_run(tmp_path / "run")


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    atomic_write_json(tmp_path / "a.json", {"x": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_written_files_get_ordinary_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        _save(tmp_path, _set())
    finally:
        os.umask(umask)
    for name in ("synthetic.safetensors", "manifest.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644
