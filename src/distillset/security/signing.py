"""Ed25519 signatures over a run folder: who made a distilled set, and that nothing in it changed since.

A run's hash (manifest ``tensors.sha256``) catches accidents, not an attacker: whoever rewrites the tensors can
rewrite the hash (the Dark Distillation threat, docs/security.md). ``signature.json`` signs, with the
publisher's private key, the whole manifest and the sha256 of the tensor file::

    {"format": "distillset-signature/1", "algorithm": "ed25519", "key_id": <16 hex>, "public_key": <base64>,
     "signed": {"manifest": {...}, "files": {"synthetic.safetensors": <sha256>}}, "signature": <base64>}

Verification needs the publisher's public key from a trusted channel (the key inside signature.json only names
which key signed; it is never trusted by itself). It names every manifest field and file that changed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from distillset.artifacts import canonical_json, changed_fields, describe_change, load_run, read_manifest
from distillset.data.base import ImageSet
from distillset.io import ArtifactError, RunDir, atomic_write_json, sha256_file

SIGNATURE_FORMAT = "distillset-signature/1"


class SignatureError(ArtifactError):
    """A run folder is unsigned, signed by an untrusted key, or changed since it was signed."""


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the sha256 of the raw public key (a short name for the key)."""
    return hashlib.sha256(_raw(public_key)).hexdigest()[:16]


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (no window with wider permissions); never overwrite."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(path, mode)  # the umask may have narrowed it further; the private key stays exactly 0600


def generate_keypair(private_path: str | Path, public_path: str | Path) -> str:
    """Write a new ed25519 key pair as PEM: the private key 0600, the public key 0644. Refuses to overwrite.
    Returns the key id."""
    private_path, public_path = Path(private_path), Path(public_path)
    for path in (private_path, public_path):
        if path.exists():
            raise FileExistsError(f"{path} exists; keys are never overwritten (choose another path or delete it)")
    key = Ed25519PrivateKey.generate()
    _write_new(private_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()), 0o600)
    _write_new(public_path, key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)
    return key_id(key.public_key())


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """An ed25519 private key from PEM; refuses a key file that others can read (as ssh does)."""
    path = Path(path)
    if not path.is_file():
        raise SignatureError(f"private key {path} not found (create one with `distillset keygen {path}`)")
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise SignatureError(f"private key {path} is readable by other users "
                             f"(mode {stat.S_IMODE(path.stat().st_mode):o}); run `chmod 600 {path}`")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{path} is not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path} holds a {type(key).__name__}, not an ed25519 key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    path = Path(path)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise SignatureError(f"public key {path} cannot be read ({exc})") from exc
    except ValueError as exc:
        raise SignatureError(f"{path} is not a PEM public key ({exc}); pass the .pub.pem file of `keygen`") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{path} holds a {type(key).__name__}, not an ed25519 public key")
    return key


def _signed_content(run_dir: Path) -> dict[str, Any]:
    manifest = read_manifest(run_dir)
    tensor_file = str(manifest["tensors"]["file"])
    return {"manifest": manifest, "files": {tensor_file: sha256_file(run_dir / tensor_file)}}


def sign_run(run_dir: str | Path, private_key: Ed25519PrivateKey | str | Path) -> Path:
    """Sign a run folder (it must load cleanly first); writes ``signature.json`` and returns its path."""
    run_dir = Path(run_dir)
    key = private_key if isinstance(private_key, Ed25519PrivateKey) else load_private_key(private_key)
    load_run(run_dir)  # never sign a set whose hash or manifest is already wrong
    signed = _signed_content(run_dir)
    public = key.public_key()
    record = {
        "format": SIGNATURE_FORMAT,
        "algorithm": "ed25519",
        "key_id": key_id(public),
        "public_key": base64.b64encode(_raw(public)).decode(),
        "signed": signed,
        "signature": base64.b64encode(key.sign(canonical_json(signed).encode())).decode(),
    }
    path = RunDir(run_dir).signature
    atomic_write_json(path, record)
    return path


@dataclass(frozen=True)
class VerifiedSignature:
    key_id: str
    signed_files: dict[str, str]


def _trusted(keys: Iterable[Ed25519PublicKey | str | Path]) -> list[Ed25519PublicKey]:
    loaded = [k if isinstance(k, Ed25519PublicKey) else load_public_key(k) for k in keys]
    if not loaded:
        raise SignatureError("verifying a signature needs at least one trusted public key (--key / --trusted-key)")
    return loaded


def verify_run(run_dir: str | Path, trusted_keys: Iterable[Ed25519PublicKey | str | Path]) -> VerifiedSignature:
    """Check ``signature.json`` against the trusted keys, then the manifest and files against what was signed.
    Raises :class:`SignatureError` naming what is wrong (unsigned, untrusted key, altered signature, each changed
    manifest field, each changed file)."""
    run_dir = Path(run_dir)
    keys = _trusted(trusted_keys)
    path = RunDir(run_dir).signature
    if not path.is_file():
        raise SignatureError(f"{run_dir} is not signed (no {path.name}); ask the publisher for a signed copy, "
                             "or sign your own run with `distillset sign`")
    try:
        record = json.loads(path.read_text())
        signed, signature = record["signed"], base64.b64decode(record["signature"], validate=True)
        claimed = base64.b64decode(record["public_key"], validate=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SignatureError(f"{path} is unreadable or incomplete ({exc})") from exc
    if record.get("format") != SIGNATURE_FORMAT or record.get("algorithm") != "ed25519":
        raise SignatureError(f"{path} has format {record.get('format')!r} / algorithm {record.get('algorithm')!r}; "
                             f"expected {SIGNATURE_FORMAT!r} / 'ed25519'")
    key = next((k for k in keys if _raw(k) == claimed), None)
    if key is None:
        raise SignatureError(
            f"{run_dir} is signed by key {hashlib.sha256(claimed).hexdigest()[:16]}, which is not among the trusted "
            f"keys ({', '.join(key_id(k) for k in keys)}); do not use it unless you trust that publisher")
    try:
        key.verify(signature, canonical_json(signed).encode())
    except InvalidSignature:
        raise SignatureError(f"{path} does not match its signature: the signed content or the signature was "
                             "altered after signing") from None
    problems: list[str] = []
    try:
        current_manifest: Any = read_manifest(run_dir)
    except ArtifactError as exc:
        raise SignatureError(f"{run_dir}: {exc}") from exc
    problems += [f"manifest field {describe_change(signed['manifest'], current_manifest, field)}"
                 for field in changed_fields(signed["manifest"], current_manifest)]
    for name, digest in signed["files"].items():
        file = run_dir / name
        if Path(name).name != name or not file.is_file():
            problems.append(f"file {name}: missing")
        elif sha256_file(file) != digest:
            problems.append(f"file {name}: content changed (sha256 {sha256_file(file)}, signed {digest})")
    if problems:
        raise SignatureError(f"{run_dir} changed since key {key_id(key)} signed it: " + "; ".join(problems)
                             + ". Do not use it; get the set again from its publisher.")
    return VerifiedSignature(key_id(key), dict(signed["files"]))


def load_trusted_run(run_dir: str | Path, trusted_keys: Iterable[Ed25519PublicKey | str | Path],
                     ) -> tuple[ImageSet, dict[str, Any]]:
    """:func:`~distillset.artifacts.load_run` that first requires a valid signature from a trusted key."""
    verify_run(run_dir, trusted_keys)
    return load_run(run_dir)
