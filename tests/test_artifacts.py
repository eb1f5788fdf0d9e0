import json

import pytest
import torch
from safetensors.torch import save_file

from distillset.artifacts import changed_fields, load_run, read_manifest, save_run
from distillset.data.base import ImageSet
from distillset.io import ArtifactError, atomic_write_json, sha256_file


def _set(soft: bool = False) -> ImageSet:
    """Six 8x8 digits-shaped images, two per class of classes 0-2."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(6, 1, 8, 8, generator=g)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    return ImageSet(images, labels, torch.softmax(torch.randn(6, 10, generator=g), 1) if soft else None)


def _save(path, synthetic):
    return save_run(path, synthetic, method="dm", dataset="digits", ipc=2, seed=3,
                    config={"lr_img": 1.0, "classes": None}, wall_seconds=1.5)


def _edit_manifest(path, change):
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


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
    assert manifest["config"] == {"lr_img": 1.0, "classes": None}
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
    _edit_manifest(tmp_path, lambda m: m["tensors"].update(sha256="0" * 64))
    with pytest.raises(ArtifactError, match="modified or corrupted"):
        load_run(tmp_path)


def _every_field(tmp_path):
    _save(tmp_path / "probe", _set())
    manifest = read_manifest(tmp_path / "probe")
    return sorted(k for k in manifest if k != "tensors")


@pytest.mark.parametrize("field", ["format", "method", "dataset", "ipc", "seed", "num_images", "image_shape",
                                   "config", "wall_seconds", "environment"])
def test_every_manifest_field_is_covered_and_named(tmp_path, field):
    assert field in _every_field(tmp_path)  # the list above is every field save_run writes
    run = tmp_path / "run"
    _save(run, _set())
    _edit_manifest(run, lambda m: m.update({field: {"edited": True}}))
    with pytest.raises(ArtifactError, match=rf"edited after the set was saved: {field}(\.\w+)?: saved .*now"):
        load_run(run)


def test_fields_list_matches_save_run(tmp_path):
    assert _every_field(tmp_path) == ["config", "dataset", "environment", "format", "image_shape", "ipc",
                                      "method", "num_images", "seed", "wall_seconds"]


def test_added_and_nested_fields_are_named(tmp_path):
    _save(tmp_path, _set())
    _edit_manifest(tmp_path, lambda m: (m["config"].update(lr_img=9.0), m.update(note="x")))
    with pytest.raises(ArtifactError, match=r"config\.lr_img: saved 1\.0, now 9\.0; note: saved \(absent\)"):
        load_run(tmp_path)


def _strip_manifest_copy(run):
    """A run as older versions wrote it: no manifest copy in the tensor header (hash updated)."""
    synthetic, _ = load_run(run)
    save_file({"images": synthetic.images, "labels": synthetic.labels}, run / "synthetic.safetensors")
    _edit_manifest(run, lambda m: m["tensors"].update(sha256=sha256_file(run / "synthetic.safetensors")))


@pytest.mark.parametrize(("field", "value", "named"), [
    ("ipc", 50, "ipc is 50 but the largest class holds 2"),
    ("num_images", 60, "num_images is 60 but the tensors hold 6"),
    ("image_shape", [1, 28, 28], r"image_shape is \[1, 28, 28\] but the images are \[1, 8, 8\]"),
    ("dataset", "fashion-mnist", r"dataset 'fashion-mnist' has \[1, 28, 28\]"),
    ("dataset", "no-such-set", "not a registered dataset"),
    ("format", "other/9", "format is 'other/9'"),
    ("config", {"classes": [0, 1]}, r"config.classes is \[0, 1\] but the labels include \[0, 1, 2\]"),
])
def test_manifest_is_checked_against_the_tensors(tmp_path, field, value, named):
    _save(tmp_path, _set())
    _strip_manifest_copy(tmp_path)
    load_run(tmp_path)  # a consistent older run still loads
    _edit_manifest(tmp_path, lambda m: m.update({field: value}))
    with pytest.raises(ArtifactError, match=named):
        load_run(tmp_path)


def test_labels_outside_the_dataset_are_refused_at_save(tmp_path):
    with pytest.raises(ArtifactError, match="outside the 10 classes"):
        save_run(tmp_path, ImageSet(torch.zeros(2, 1, 8, 8), torch.tensor([3, 12])), method="dm", dataset="digits",
                 ipc=1, seed=0, config={}, wall_seconds=0.0)


def test_changed_fields_lists_dotted_paths():
    assert changed_fields({"a": 1, "b": {"c": 2, "d": 3}}, {"a": 1, "b": {"c": 5}, "e": 0}) == ["b.c", "b.d", "e"]
    assert changed_fields([1, 2], [1, 2]) == []


def test_missing_and_corrupt_manifest_errors(tmp_path):
    with pytest.raises(ArtifactError, match="not a distillset run directory"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_manifest(tmp_path)


def test_manifest_cannot_point_outside_the_run(tmp_path):
    _save(tmp_path / "run", _set())
    _edit_manifest(tmp_path / "run", lambda m: m["tensors"].update(file="../elsewhere.safetensors"))
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
