"""VLCP: dataset distillation via vision-language category prototypes (Zou et al., arXiv 2506.23580).

Per class: encode every training image with the diffusion model's VAE (a posterior sample times the scaling
factor, 0.18215 for SD v1-5), drop outliers with Local Outlier Factor (Sec. 3.2), cluster the rest with k-means,
k = IPC; the centres are the image prototypes (Sec. 3.3.1). Per cluster one existing caption becomes the text
prototype (Algorithm 2, Eqs. 2-4). Each distilled image is img2img from its centre latent: noise it to the
timestep that ``strength`` selects and denoise with classifier-free guidance on the prototype text (Sec. 3.4).

Stages: :func:`compute_prototypes` (needs the VAE and the captions), :func:`synthesize` (needs the whole
pipeline), :func:`distill_vlcp` (both, writing a normal distillset run directory).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
from sklearn.neighbors import LocalOutlierFactor
from torch import Tensor

from distillset.artifacts import save_run
from distillset.data import load_dataset
from distillset.data.base import DatasetInfo, DatasetSplits, ImageSet
from distillset.generative.captions import captions_for, read_captions
from distillset.generative.diffusion import (
    TRAINING_RECORD,
    check_model_dir,
    diffusers_module,
    load_pipeline,
    to_model_range,
)
from distillset.io import atomic_save_tensors

PromptSource = Literal["prototype", "label", "none"]
PROTOTYPES_FILE = "prototypes.safetensors"
# the settings that determine the prototypes (the rest only affect synthesis)
PROTOTYPE_FIELDS = ("ipc", "contamination", "lof_neighbors", "beta", "top_k", "faithful_text", "resolution", "seed")


@dataclass
class VLCPConfig:
    """VLCP settings; defaults are the authors' ImageNette script (run_nette.sh): alpha 0.1, beta 0.7, top-k 30,
    strength 0.7, guidance 10, 50 steps, negative prompt "cartoon, anime, painting"."""

    ipc: int = 10
    contamination: float = 0.1  # LOF alpha; 0 skips outlier removal (the authors' CIFAR setting)
    lof_neighbors: int = 10
    beta: float = 0.7  # words in at least this fraction of a class's captions are not representative (Eq. 2)
    top_k: int = 30  # words kept per cluster (Eq. 3)
    faithful_text: bool = False  # True: the authors' substring, case-sensitive word matching (see text_prototypes)
    prompt: PromptSource = "prototype"  # "none": image prototypes only (the paper's no-text ablation); "label"
    strength: float = 0.7
    guidance_scale: float = 10.0
    steps: int = 50
    negative_prompt: str = "cartoon, anime, painting"
    resolution: int | None = None  # image size fed to the VAE; None: the VAE's sample_size
    seed: int = 0
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.ipc < 1:
            raise ValueError(f"ipc must be >= 1, got {self.ipc}")
        if not 0.0 <= self.contamination < 0.5:
            raise ValueError(f"contamination (LOF alpha) must be in [0, 0.5), got {self.contamination}")
        if not 0.0 < self.beta <= 1.0 or self.top_k < 1:
            raise ValueError(f"beta must be in (0, 1] and top_k >= 1 (got {self.beta}, {self.top_k})")
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {self.strength}")
        if self.prompt not in ("prototype", "label", "none"):
            raise ValueError(f"prompt must be 'prototype', 'label' or 'none', got {self.prompt!r}")


# ---------------------------------------------------------------- image prototypes


@torch.no_grad()
def encode_latents(vae: Any, images01: Tensor, resolution: int, *, generator: torch.Generator,
                   batch_size: int = 64) -> Tensor:
    """``vae.encode(2x - 1).latent_dist.sample() * scaling_factor`` for images in [0, 1] (a posterior sample,
    as the authors' code clusters), at ``resolution`` pixels and with the VAE's channel count."""
    channels = int(vae.config.in_channels)
    latents = []
    for start in range(0, images01.shape[0], batch_size):
        x = _match_channels(images01[start:start + batch_size].float(), channels)
        x = to_model_range(x, resolution).to(vae.device, vae.dtype)
        latents.append(vae.encode(x).latent_dist.sample(generator=generator).float().cpu())
    return torch.cat(latents) * float(vae.config.scaling_factor)


def remove_outliers(features: np.ndarray, contamination: float, n_neighbors: int = 10) -> np.ndarray:
    """Inlier mask of Local Outlier Factor (Euclidean, ``n_neighbors``) at ``contamination``; all True at 0."""
    if contamination == 0.0:
        return np.ones(len(features), dtype=bool)
    lof = LocalOutlierFactor(n_neighbors=min(n_neighbors, len(features) - 1), contamination=contamination)
    return lof.fit_predict(features) == 1


def image_prototypes(features: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means (k-means++, 10 restarts) centres ``(k, D)`` and each row's cluster ``(N,)``."""
    if len(features) < k:
        raise ValueError(f"{len(features)} images left after outlier removal, fewer than ipc={k}: lower "
                         "--contamination or --ipc")
    kmeans = KMeans(n_clusters=k, random_state=seed, n_init=10).fit(features)
    return kmeans.cluster_centers_.astype(np.float32), kmeans.labels_


# ---------------------------------------------------------------- text prototypes (Algorithm 2)


def caption_tokens(caption: str) -> list[str]:
    """Lower-cased alphabetic tokens (tokens with digits, hyphens or apostrophes are dropped, as ``isalpha``
    drops them after NLTK's word_tokenize in the authors' code)."""
    return [token for token in re.findall(r"[\w'-]+", caption.lower()) if token.isalpha()]


def text_prototypes(
    captions: Sequence[str],
    clusters: Sequence[int],
    num_clusters: int,
    class_name: str,
    *,
    beta: float = 0.7,
    top_k: int = 30,
    faithful: bool = False,
    stop_words: frozenset[str] = ENGLISH_STOP_WORDS,
) -> list[str]:
    """One existing caption per cluster of a class (Algorithm 2).

    Eq. 2: the non-representative words N are the non-stop words found in at least ``beta`` of the class's
    captions (document frequency, ``>=`` as in the code). Eq. 3: per cluster, the ``top_k`` most frequent words
    (raw counts over the cluster's captions; first seen wins ties) that are not stop words, not in N and not part
    of the class name. Eq. 4: a caption scores the sum of the counts of the top words it contains; the first
    caption with the highest score is the prototype, so give each cluster's captions closest-first.

    ``faithful=True`` copies the authors' matching: a word "is in" the class name or a caption by substring test
    on the raw caption (case-sensitive, "red" matches "tired"), and a cluster whose captions all score 0 gets
    the empty prompt. The default matches whole lower-case tokens and falls back to the cluster's first caption.
    """
    tokens = [caption_tokens(caption) for caption in captions]
    frequency = Counter(word for words in tokens for word in set(words))
    common = {word for word, count in frequency.items() if word not in stop_words and count >= beta * len(captions)}
    name = class_name.lower()
    name_tokens = set(caption_tokens(class_name))

    def in_name(word: str) -> bool:
        return word in name if faithful else word in name_tokens

    prototypes = []
    for cluster in range(num_clusters):
        members = [i for i, c in enumerate(clusters) if c == cluster]
        counts = Counter(w for i in members for w in tokens[i]
                         if w not in stop_words and w not in common and not in_name(w))
        top = counts.most_common(top_k)

        # Eq. 4; faithful: substring of the raw caption, else a whole lower-case token
        scores = [sum(count for word, count in top if word in (captions[i] if faithful else set(tokens[i])))
                  for i in members]
        best = int(np.argmax(scores)) if scores else -1
        if best < 0 or (scores[best] == 0 and faithful):
            prototypes.append("")
        else:
            prototypes.append(captions[members[best]])
    return prototypes


# ---------------------------------------------------------------- the pipeline


@dataclass
class Prototypes:
    """Image prototypes (scaled latents), their classes and text prototypes, aligned by row."""

    latents: Tensor  # (K, 4, h, w)
    labels: Tensor  # (K,)
    texts: list[str]
    inliers: list[int]  # per class: images kept by LOF
    settings: dict[str, Any] = field(default_factory=dict)  # the PROTOTYPE_FIELDS they were made with

    def save(self, path: str | Path, config: VLCPConfig) -> Path:
        path = Path(path)
        atomic_save_tensors(path, {"latents": self.latents.contiguous(), "labels": self.labels},
                            metadata={"texts": json.dumps(self.texts), "inliers": json.dumps(self.inliers),
                                      "config": json.dumps(asdict(config))})
        return path

    @classmethod
    def load(cls, path: str | Path) -> Prototypes:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"prototypes file {path} not found; create it with `distillset vlcp prototypes`")
        with safe_open(path, framework="pt") as handle:
            meta = handle.metadata() or {}
            config = json.loads(meta["config"])
            return cls(handle.get_tensor("latents"), handle.get_tensor("labels"), json.loads(meta["texts"]),
                       json.loads(meta["inliers"]), {k: config.get(k) for k in PROTOTYPE_FIELDS})

    def check(self, config: VLCPConfig, path: Path) -> None:
        """Refuse prototypes made with other prototype settings than ``config``'s."""
        wanted = {k: getattr(config, k) for k in PROTOTYPE_FIELDS}
        differ = [f"{k}: {self.settings.get(k)} there, {v} now" for k, v in wanted.items() if self.settings.get(k) != v]
        if differ:
            raise ValueError(f"{path} was made with other settings ({'; '.join(differ)}); delete it to compute new "
                             "prototypes, or write to a new output folder")


def compute_prototypes(
    images01: Tensor,
    labels: Tensor,
    captions: Sequence[str],
    class_names: Sequence[str],
    vae: Any,
    config: VLCPConfig,
) -> Prototypes:
    """Image and text prototypes of every class (stages 3 and 4)."""
    resolution = config.resolution or int(vae.config.sample_size)
    generator = torch.Generator().manual_seed(config.seed)
    latents = encode_latents(vae, images01, resolution, generator=generator, batch_size=config.batch_size)
    shape = latents.shape[1:]
    rows, row_labels, texts, inliers = [], [], [], []
    for c in range(len(class_names)):
        index = torch.nonzero(labels == c).flatten()
        if len(index) == 0:
            raise ValueError(f"class {c} ({class_names[c]}) has no training images")
        features = latents[index].flatten(1).numpy()
        keep = remove_outliers(features, config.contamination, config.lof_neighbors)
        centres, clusters = image_prototypes(features[keep], config.ipc, config.seed)
        kept = index[torch.from_numpy(keep)].tolist()
        # captions of each cluster closest to its centre first: ties and empty scores fall to the closest sample
        distance = np.linalg.norm(features[keep] - centres[clusters], axis=1)
        order = np.argsort(distance, kind="stable")
        texts += text_prototypes([captions[kept[i]] for i in order], clusters[order].tolist(), config.ipc,
                                 class_names[c], beta=config.beta, top_k=config.top_k, faithful=config.faithful_text)
        rows.append(torch.from_numpy(centres).view(config.ipc, *shape))
        row_labels += [c] * config.ipc
        inliers.append(int(keep.sum()))
    return Prototypes(torch.cat(rows), torch.tensor(row_labels), texts, inliers)


def prompts_for(prototypes: Prototypes, class_names: Sequence[str], source: PromptSource) -> list[str]:
    if source == "prototype":
        return list(prototypes.texts)
    if source == "label":
        return [class_names[c] for c in prototypes.labels.tolist()]
    return [""] * len(prototypes.texts)


@torch.no_grad()
def synthesize(pipe: Any, prototypes: Prototypes, prompts: Sequence[str], config: VLCPConfig) -> Tensor:
    """img2img from each prototype latent with its prompt; images in [0, 1] at the model's resolution."""
    generator = torch.Generator().manual_seed(config.seed)
    out = []
    for start in range(0, len(prompts), config.batch_size):
        stop = start + config.batch_size
        latents = prototypes.latents[start:stop].to(pipe.device, pipe.unet.dtype)
        images = pipe(
            prompt=list(prompts[start:stop]), image=latents, strength=config.strength,
            guidance_scale=config.guidance_scale, num_inference_steps=config.steps,
            negative_prompt=[config.negative_prompt] * latents.shape[0] if config.negative_prompt else None,
            generator=generator, output_type="pt",
        ).images
        out.append(images.float().cpu())
    return torch.cat(out)


def _match_channels(images: Tensor, channels: int) -> Tensor:
    if images.shape[1] == channels:
        return images
    if channels == 1:
        return images.mean(dim=1, keepdim=True)
    if images.shape[1] == 1:
        return images.expand(-1, channels, -1, -1)
    raise ValueError(f"cannot map {images.shape[1]}-channel images to {channels} channels")


def to_dataset_images(images01: Tensor, info: DatasetInfo) -> Tensor:
    """Generated images resized to the dataset's size and channels, normalised as the dataset is."""
    images = _match_channels(images01, info.channels)
    if tuple(images.shape[-2:]) != tuple(info.image_size):
        images = F.interpolate(images, size=info.image_size, mode="bilinear", antialias=True, align_corners=False)
    return info.normalize(images.clamp(0, 1))


def distill_vlcp(
    dataset: str,
    model_dir: str | Path,
    captions_path: str | Path | None,
    out_dir: str | Path,
    config: VLCPConfig,
    *,
    root: str | Path | None = None,
    device: str = "cpu",
) -> Path:
    """Prototypes -> img2img -> a run directory; returns the manifest path.

    The prototypes are kept in ``out_dir/prototypes.safetensors``: a rerun reuses them and only synthesizes.
    ``captions_path`` may be None when the prompt source is not "prototype".
    """
    started = time.perf_counter()
    if captions_path is None and config.prompt == "prototype":
        raise ValueError("text prototypes need captions: pass a captions file (distillset vlcp captions)")
    splits = load_dataset(dataset, root)
    prototypes_path = Path(out_dir) / PROTOTYPES_FILE
    if prototypes_path.is_file():
        prototypes = Prototypes.load(prototypes_path)
        prototypes.check(config, prototypes_path)
    else:
        prototypes = prototypes_of_dataset(splits, model_dir, captions_path, prototypes_path, config, device=device)
    return save_vlcp_run(load_pipeline(model_dir, device), prototypes, splits.info, dataset, model_dir, out_dir,
                         config, prepared_seconds=time.perf_counter() - started)


def save_vlcp_run(pipe: Any, prototypes: Prototypes, info: DatasetInfo, dataset: str, model_dir: str | Path,
                  out_dir: str | Path, config: VLCPConfig, prepared_seconds: float = 0.0) -> Path:
    """Synthesize from ``prototypes`` and save the run directory (manifest method ``vlcp``)."""
    started = time.perf_counter()
    prompts = prompts_for(prototypes, info.class_names, config.prompt)
    images = to_dataset_images(synthesize(pipe, prototypes, prompts, config), info)
    training = Path(check_model_dir(model_dir)) / TRAINING_RECORD
    extra = {
        "prompts": prompts,
        "inliers_per_class": prototypes.inliers,
        "diffusion_model": str(model_dir),
        "diffusion_training": json.loads(training.read_text()) if training.is_file() else None,
    }
    return save_run(out_dir, ImageSet(images, prototypes.labels.long()), method="vlcp", dataset=dataset,
                    ipc=config.ipc, seed=config.seed, config=asdict(config),
                    wall_seconds=prepared_seconds + time.perf_counter() - started, extra=extra)


# ---------------------------------------------------------------- dataset-level stages (what the CLI calls)


def caption_dataset(dataset: str, out: str | Path, *, source: Literal["measured", "llava"] = "measured",
                    model_path: str | Path | None = None, root: str | Path | None = None,
                    device: str = "cpu") -> Path:
    """Caption every training image of ``dataset`` into a JSONL file (stage 1)."""
    from distillset.generative.captions import llava_captions, measured_captions, write_captions

    splits = load_dataset(dataset, root)
    images01 = splits.info.denormalize(splits.train.images)
    if source == "measured":
        records = measured_captions(images01, splits.train.labels, splits.info.class_names)
    elif source == "llava":
        if model_path is None:
            raise ValueError("--source llava needs --model-path, a local LLaVA checkpoint in transformers format")
        records = llava_captions(model_path, images01, splits.train.labels, splits.info.class_names, device=device)
    else:
        raise ValueError(f"caption source must be 'measured' or 'llava', got {source!r}")
    return write_captions(out, records)


def train_on_dataset(dataset: str, model_dir: str | Path, captions_path: str | Path, config: Any, *,
                     tiny: Any = None, root: str | Path | None = None) -> dict[str, Any]:
    """Train (or fine-tune) the model folder on the training split and its captions; with ``tiny`` (a
    :class:`~distillset.generative.diffusion.TinyModelConfig`) first create a tiny model there if none exists."""
    from distillset.generative.diffusion import build_tiny_model, caption_words, train_diffusion

    splits = load_dataset(dataset, root)
    captions = captions_for(read_captions(captions_path), splits.train.labels)
    if tiny is not None and not (Path(model_dir) / "model_index.json").is_file():
        build_tiny_model(model_dir, caption_words(captions), tiny, seed=config.seed)
    return train_diffusion(model_dir, splits.info.denormalize(splits.train.images), captions, config)


def prototypes_of_dataset(splits: DatasetSplits, model_dir: str | Path, captions_path: str | Path | None,
                          out: str | Path, config: VLCPConfig, *, device: str = "cpu") -> Prototypes:
    """Image and text prototypes of a dataset's training split saved to ``out`` (stages 3-4)."""
    captions = ([""] * len(splits.train) if captions_path is None
                else captions_for(read_captions(captions_path), splits.train.labels))
    vae = diffusers_module().AutoencoderKL.from_pretrained(check_model_dir(model_dir) / "vae", local_files_only=True)
    prototypes = compute_prototypes(splits.info.denormalize(splits.train.images), splits.train.labels, captions,
                                    splits.info.class_names, vae.to(device), config)
    prototypes.save(out, config)
    return prototypes
