"""VLCP on Fashion-MNIST at IPC 10: image + text prototypes (vlcp) vs image prototypes only (vlcp-no-text,
the paper's "without text" ablation, D4M-style) vs random real images vs the published DM set.

    OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python benchmarks/vlcp_fashion_mnist.py train
    OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python benchmarks/vlcp_fashion_mnist.py distill
    OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python benchmarks/vlcp_fashion_mnist.py evaluate
    .venv/bin/python benchmarks/vlcp_fashion_mnist.py report

No Stable Diffusion or LLaVA weights can be used here, so the diffusion model is a small latent-diffusion model
(diffusers AutoencoderKL + UNet2DConditionModel + a 2-layer CLIP text encoder, all from scratch) trained on the
60k training images on CPU, and the captions are the documented stand-in (class name + attributes measured from
the pixels, distillset.generative.captions.measured_captions), not LLaVA's. Every stage is resumable; work files
are in benchmarks/work/vlcp_fashion_mnist/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import ROOT
from distillset.data import load_dataset
from distillset.generative.captions import captions_for, measured_captions, read_captions, write_captions
from distillset.generative.diffusion import (
    DiffusionTrainConfig,
    TinyModelConfig,
    build_tiny_model,
    caption_words,
    train_diffusion,
)

NAME = "vlcp_fashion_mnist"
WORK = ROOT / "work" / NAME
MODEL = WORK / "model"
CAPTIONS = WORK / "captions.jsonl"
DM_SET = ROOT / "artifacts" / "dm_fashion_mnist" / "fashion-mnist-dm-ipc10-it2000-s0"
TINY = TinyModelConfig(vae_channels=(16, 32, 32), unet_channels=(32, 64), norm_groups=8)
TRAIN = DiffusionTrainConfig(vae_steps=600, unet_steps=3500, train_text_encoder=True, batch_size=32,
                             checkpoint_seconds=60)
IPC = 10
METHODS = ("vlcp", "vlcp-no-text", "random", "dm")
# the evaluation of every set (scaled from the DM protocol's 1000 epochs to fit the shared CPUs)
EVAL_ARGS = ["--model", "convnet3", "--epochs", "300", "--num-models", "5"]


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, flush=True)


def train() -> None:
    torch.set_num_threads(1)
    splits = load_dataset("fashion-mnist")
    images01 = splits.info.denormalize(splits.train.images)
    if not CAPTIONS.is_file():
        write_captions(CAPTIONS, measured_captions(images01, splits.train.labels, splits.info.class_names))
    captions = captions_for(read_captions(CAPTIONS), splits.train.labels)
    if not (MODEL / "model_index.json").is_file():
        shutil.rmtree(MODEL, ignore_errors=True)
        build_tiny_model(MODEL, caption_words(captions), TINY)
    record = train_diffusion(MODEL, images01, captions, TRAIN, log=log)
    log(f"done: {json.dumps(record.get('stages'))}")


def run_dir(method: str) -> Path:
    return DM_SET if method == "dm" else WORK / f"fashion-mnist-{method}-ipc{IPC}-s0"


def distill() -> None:
    from distillset.generative.vlcp import VLCPConfig, distill_vlcp

    torch.set_num_threads(1)
    for method, use_text in (("vlcp", True), ("vlcp-no-text", False)):
        if not (run_dir(method) / "manifest.json").is_file():
            started = time.perf_counter()
            distill_vlcp("fashion-mnist", MODEL, CAPTIONS, run_dir(method), VLCPConfig(ipc=IPC, use_text=use_text))
            log(f"{method}: {time.perf_counter() - started:.0f}s")
    if not (run_dir("random") / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "distillset.cli", "coreset", "--dataset", "fashion-mnist", "--method",
                        "random", "--ipc", str(IPC), "--out", str(run_dir("random"))], check=True)


def evaluate() -> None:
    for method in METHODS:
        out = WORK / f"eval-{method}.json"
        if not out.is_file():
            subprocess.run([sys.executable, "-m", "distillset.cli", "evaluate", str(run_dir(method)), *EVAL_ARGS,
                            "--json", str(out)], check=True)


def report() -> None:
    raise NotImplementedError


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["train", "distill", "evaluate", "report"])
    {"train": train, "distill": distill, "evaluate": evaluate, "report": report}[parser.parse_args().stage]()
