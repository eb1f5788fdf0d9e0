"""Signatures over run folders, and the CLI's signature options."""

import json
import stat

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from distillset.artifacts import load_run, read_manifest, save_run
from distillset.cli import app
from distillset.data.base import ImageSet
from distillset.io import ArtifactError, sha256_file
from distillset.security.signing import (
    SignatureError,
    generate_keypair,
    load_private_key,
    load_trusted_run,
    sign_run,
    verify_run,
)


@pytest.fixture
def keys(tmp_path):
    private, public = tmp_path / "keys" / "key.pem", tmp_path / "keys" / "key.pub.pem"
    generate_keypair(private, public)
    return private, public


@pytest.fixture
def signed_run(tmp_path, keys):
    g = torch.Generator().manual_seed(0)
    run = tmp_path / "run"
    save_run(run, ImageSet(torch.randn(20, 1, 8, 8, generator=g), torch.arange(10).repeat_interleave(2)),
             method="dm", dataset="digits", ipc=2, seed=0, config={"lr_img": 1.0}, wall_seconds=1.0)
    sign_run(run, keys[0])
    return run


def _edit_manifest(run, change):
    manifest = json.loads((run / "manifest.json").read_text())
    change(manifest)
    (run / "manifest.json").write_text(json.dumps(manifest))


def test_keys_are_written_with_safe_permissions_and_never_overwritten(keys):
    private, public = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    with pytest.raises(FileExistsError, match="never overwritten"):
        generate_keypair(private, public.with_name("other.pub.pem"))


def test_a_private_key_readable_by_others_is_refused(keys):
    keys[0].chmod(0o644)
    with pytest.raises(SignatureError, match="chmod 600"):
        load_private_key(keys[0])


def test_signed_run_verifies_and_loads(signed_run, keys):
    verified = verify_run(signed_run, [keys[1]])
    assert list(verified.signed_files) == ["synthetic.safetensors"]
    synthetic, manifest = load_trusted_run(signed_run, [keys[1]])
    assert len(synthetic) == 20 and manifest["ipc"] == 2


def test_one_flipped_byte_is_named(signed_run, keys):
    path = signed_run / "synthetic.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(SignatureError, match="file synthetic.safetensors: content changed"):
        verify_run(signed_run, [keys[1]])


def _swap_tensors(run, images, labels):
    """The attack the hash cannot stop: new tensors (with a matching manifest copy) and the hash updated."""
    manifest = read_manifest(run)
    copy = {k: v for k, v in manifest.items() if k != "tensors"}
    save_file({"images": images, "labels": labels}, run / "synthetic.safetensors",
              metadata={"distillset-manifest": json.dumps(copy, sort_keys=True, separators=(",", ":"))})
    _edit_manifest(run, lambda m: m["tensors"].update(sha256=sha256_file(run / "synthetic.safetensors")))


@pytest.mark.parametrize("what", ["labels", "images"])
def test_full_tensor_plus_hash_swap_passes_the_hash_but_not_the_signature(signed_run, keys, what):
    synthetic, _ = load_run(signed_run)
    images, labels = synthetic.images.clone(), synthetic.labels.clone()
    if what == "labels":
        labels[[0, 2]] = labels[[2, 0]]
    else:
        images[:, :, -1, -1] = 10.0  # a patch trigger
    _swap_tensors(signed_run, images, labels)
    load_run(signed_run)  # hash, manifest copy and consistency all agree: only a signature can tell
    with pytest.raises(SignatureError, match=r"manifest field tensors\.sha256: saved .*file synthetic\.safetensors"):
        verify_run(signed_run, [keys[1]])


@pytest.mark.parametrize("field", ["format", "method", "dataset", "ipc", "seed", "num_images", "image_shape",
                                   "config", "wall_seconds", "environment", "tensors"])
def test_each_manifest_field_change_is_named(signed_run, keys, field):
    _edit_manifest(signed_run, lambda m: m.update({field: "edited"}))
    with pytest.raises(SignatureError, match=rf"manifest field {field}(\.\w+)?: saved .*, now"):
        verify_run(signed_run, [keys[1]])


def test_untrusted_key_unsigned_run_and_altered_signature_are_refused(signed_run, keys, tmp_path):
    other = tmp_path / "other.pem", tmp_path / "other.pub.pem"
    generate_keypair(*other)
    with pytest.raises(SignatureError, match="not among the trusted keys"):
        verify_run(signed_run, [other[1]])
    record = json.loads((signed_run / "signature.json").read_text())
    record["signed"]["manifest"]["ipc"] = 50  # re-aligning the signed copy with an edit does not help
    (signed_run / "signature.json").write_text(json.dumps(record))
    with pytest.raises(SignatureError, match="does not match its signature"):
        verify_run(signed_run, [keys[1]])
    (signed_run / "signature.json").unlink()
    with pytest.raises(SignatureError, match="is not signed"):
        verify_run(signed_run, [keys[1]])
    with pytest.raises(SignatureError, match="at least one trusted public key"):
        verify_run(signed_run, [])


def test_signing_refuses_a_run_that_is_already_inconsistent(signed_run, keys):
    _edit_manifest(signed_run, lambda m: m.update(ipc=5))
    with pytest.raises(ArtifactError, match="ipc: saved 2, now 5"):
        sign_run(signed_run, keys[0])


def test_cli_keygen_sign_verify_and_evaluate_requiring_a_signature(tmp_path, signed_run, keys, monkeypatch):
    runner = CliRunner()
    key = tmp_path / "cli" / "k.pem"
    result = runner.invoke(app, ["keygen", str(key)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and (tmp_path / "cli" / "k.pub.pem").is_file()
    (signed_run / "signature.json").unlink()
    assert runner.invoke(app, ["sign", str(signed_run), "--key", str(key)]).exit_code == 0
    result = runner.invoke(app, ["verify", str(signed_run), "--key", str(tmp_path / "cli" / "k.pub.pem")])
    assert result.exit_code == 0 and "unchanged" in result.output
    result = runner.invoke(app, ["verify", str(signed_run), "--key", str(keys[1])])
    assert result.exit_code == 2 and "not among the trusted keys" in result.output
    result = runner.invoke(app, ["evaluate", str(signed_run), "--require-signature"])
    assert result.exit_code == 2 and "needs the publisher's public key" in result.output
    result = runner.invoke(app, ["evaluate", str(signed_run), "--trusted-key", str(keys[1]), "--epochs", "0"])
    assert result.exit_code == 2 and "not among the trusted keys" in result.output
    monkeypatch.setenv("DISTILLSET_TRUSTED_KEYS", str(keys[1]))  # every command's loader honours it
    result = runner.invoke(app, ["inspect", str(signed_run)])
    assert result.exit_code == 2 and "not among the trusted keys" in result.output
