"""End to end through the CLI with a tiny random diffusion model on the digits dataset (bundled with
scikit-learn): captions -> train-diffusion -> run / prototypes + synthesize -> evaluate."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from distillset.artifacts import load_run  # noqa: E402
from distillset.cli import app  # noqa: E402
from distillset.generative.captions import read_captions  # noqa: E402

runner = CliRunner()
TINY = ["--image-size", "16", "--vae-channels", "8,8", "--unet-channels", "8,16", "--text-width", "16",
        "--norm-groups", "4"]


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_vlcp_cli_end_to_end(tmp_path):
    captions, model, run = tmp_path / "captions.jsonl", tmp_path / "model", tmp_path / "run"
    invoke("vlcp", "captions", "--dataset", "digits", "--out", str(captions))
    records = read_captions(captions)
    assert len(records) == 1437 and records[0].index == 0
    invoke("vlcp", "train-diffusion", "--dataset", "digits", "--model-dir", str(model), "--captions", str(captions),
           "--init", "tiny", "--vae-steps", "3", "--unet-steps", "2", "--batch-size", "8", *TINY)
    assert json.loads((model / "training.json").read_text())["stages"]["unet"]["steps"] == 2
    invoke("vlcp", "run", "--dataset", "digits", "--model-dir", str(model), "--captions", str(captions),
           "--ipc", "2", "--steps", "4", "--out", str(run))
    synthetic, manifest = load_run(run)
    assert manifest["method"] == "vlcp" and synthetic.images.shape == (20, 1, 8, 8)
    assert synthetic.labels.bincount().tolist() == [2] * 10
    assert all(prompt in {r.caption for r in records} for prompt in manifest["prompts"])
    assert manifest["diffusion_training"]["stages"]["vae"]["steps"] == 3
    result = invoke("evaluate", str(run), "--epochs", "2", "--models", "1", "--precision", "fp32", "--no-compile")
    assert "convnet3" in result.output

    # the two stages separately, without text: the no-text prompts are empty
    prototypes, no_text = tmp_path / "p.safetensors", tmp_path / "no-text"
    invoke("vlcp", "prototypes", "--dataset", "digits", "--model-dir", str(model), "--ipc", "1", "--contamination",
           "0", "--out", str(prototypes))
    invoke("vlcp", "synthesize", "--dataset", "digits", "--model-dir", str(model), "--prototypes", str(prototypes),
           "--prompt", "none", "--steps", "4", "--out", str(no_text))
    assert load_run(no_text)[1]["prompts"] == [""] * 10


def test_vlcp_cli_errors_name_the_fix(tmp_path):
    result = runner.invoke(app, ["vlcp", "run", "--dataset", "digits", "--model-dir", str(tmp_path / "none"),
                                 "--captions", str(tmp_path / "c.jsonl"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "captions file" in result.output
    result = runner.invoke(app, ["vlcp", "run", "--dataset", "digits", "--model-dir", str(tmp_path / "none"),
                                 "--prompt", "none", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "train-diffusion --init tiny" in result.output
    result = runner.invoke(app, ["vlcp", "run", "--model-dir", str(tmp_path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "text prototypes need captions" in result.output


def test_vlcp_run_refuses_prototypes_made_with_other_settings(tmp_path):
    import torch

    from distillset.generative.vlcp import Prototypes, VLCPConfig

    out = tmp_path / "run"
    out.mkdir()
    Prototypes(torch.zeros(2, 4, 2, 2), torch.tensor([0, 1]), ["", ""], [5, 5]).save(
        out / "prototypes.safetensors", VLCPConfig(ipc=1))
    result = runner.invoke(app, ["vlcp", "run", "--dataset", "digits", "--model-dir", str(tmp_path), "--prompt", "none",
                                 "--ipc", "2", "--out", str(out)])
    assert result.exit_code == 2 and "ipc: 1 there, 2 now" in result.output
