"""Generative distillation: a diffusion model synthesises the distilled images (VLCP, docs/vlcp.md).

Needs the ``vlcp`` extra (diffusers, transformers): ``pip install 'distillset[vlcp]'``.
"""

from distillset.generative.captions import CaptionRecord, measured_captions, read_captions, write_captions
from distillset.generative.diffusion import DiffusionTrainConfig, TinyModelConfig, build_tiny_model, train_diffusion
from distillset.generative.vlcp import (
    Prototypes,
    VLCPConfig,
    compute_prototypes,
    distill_vlcp,
    image_prototypes,
    remove_outliers,
    synthesize,
    text_prototypes,
)

__all__ = [
    "CaptionRecord",
    "DiffusionTrainConfig",
    "Prototypes",
    "TinyModelConfig",
    "VLCPConfig",
    "build_tiny_model",
    "compute_prototypes",
    "distill_vlcp",
    "image_prototypes",
    "measured_captions",
    "read_captions",
    "remove_outliers",
    "synthesize",
    "text_prototypes",
    "train_diffusion",
    "write_captions",
]
