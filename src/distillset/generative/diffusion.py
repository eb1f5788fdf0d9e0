"""Latent-diffusion models for generative distillation: a Stable-Diffusion folder on disk, tiny ones built from
configs, and resumable training of the VAE and of the text-conditioned UNet.

A model folder is what ``diffusers.StableDiffusionImg2ImgPipeline.save_pretrained`` writes (``vae/``, ``unet/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``, ``model_index.json``): Stable Diffusion v1-5 downloaded
elsewhere and copied here works unchanged, and so does a tiny model from :func:`build_tiny_model`.

Training follows diffusers' ``examples/text_to_image/train_text_to_image.py`` (the script VLCP fine-tunes
SD v1-5 with): latents ``z0 = vae.encode(x).latent_dist.sample() * scaling_factor``, noise ``eps``, a uniform
timestep ``t``, ``z_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps`` and the loss ``||eps - unet(z_t, t, c)||^2``
(Ho et al. 2020, Eq. 14) with ``c`` the text encoder's last hidden state of the caption. A caption is replaced
by the empty prompt with probability ``caption_dropout`` so that classifier-free guidance has an unconditional
model to subtract. A tiny model trained from scratch also trains its VAE first (reconstruction MSE + a small
KL term, no perceptual or GAN loss) and, since it has no pretrained text encoder, its text encoder together with
the UNet; fine-tuning a pretrained model trains the UNet only, as the script does.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import Tensor, nn

from distillset.io import CheckpointMismatchError, atomic_save_tensors, atomic_write_json

MODEL_SUBFOLDERS = ("vae", "unet", "text_encoder", "tokenizer", "scheduler")
TRAINING_STATE = "training_state.safetensors"
TRAINING_RECORD = "training.json"
CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789-,.'/"


def diffusers_module() -> Any:
    try:
        import diffusers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("VLCP needs diffusers and transformers: pip install 'distillset[vlcp]'") from exc
    return diffusers


def check_model_dir(model_dir: str | Path) -> Path:
    """``model_dir`` if it holds a Stable-Diffusion-layout model, else a ``FileNotFoundError`` naming the gap."""
    path = Path(model_dir)
    missing = [name for name in MODEL_SUBFOLDERS if not (path / name).is_dir()]
    if not path.is_dir() or missing:
        raise FileNotFoundError(
            f"{path} is not a diffusion model folder (missing: {', '.join(missing) or 'the folder'}). Put a "
            "Stable Diffusion v1-5 checkpoint there in diffusers layout (vae/, unet/, text_encoder/, tokenizer/, "
            "scheduler/), or create a small one with `distillset vlcp train-diffusion --init tiny`"
        )
    return path


def load_pipeline(model_dir: str | Path, device: str | torch.device = "cpu") -> Any:
    """The img2img pipeline of a local model folder (no download, no safety checker)."""
    path = check_model_dir(model_dir)
    pipe = diffusers_module().StableDiffusionImg2ImgPipeline.from_pretrained(
        path, safety_checker=None, feature_extractor=None, requires_safety_checker=False, local_files_only=True,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def caption_words(captions: Sequence[str]) -> list[str]:
    """The distinct lower-case letter/digit runs of ``captions`` (a tokenizer vocabulary for them)."""
    return sorted({word for caption in captions for word in re.findall(r"[a-z0-9]+", caption.lower())})


def write_word_tokenizer(words: Sequence[str], directory: str | Path, max_length: int = 32) -> Any:
    """A CLIP BPE tokenizer whose merges spell each of ``words`` as one token; other text falls back to
    single characters. Saved to ``directory`` and returned (for tiny models that have no pretrained vocabulary)."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in CHARACTERS:
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    merges: list[str] = []
    for word in dict.fromkeys(w.lower() for w in words):
        if not re.fullmatch(f"[{re.escape(CHARACTERS)}]+", word):
            raise ValueError(f"tokenizer word {word!r} has characters outside {CHARACTERS!r}")
        symbols = [*word[:-1], word[-1] + "</w>"]
        merged = symbols[0]
        for symbol in symbols[1:]:
            rule = f"{merged} {symbol}"
            if rule not in merges:
                merges.append(rule)
            merged += symbol
            vocab.setdefault(merged, len(vocab))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{rule}\n" for rule in merges))
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=max_length)
    tokenizer.save_pretrained(directory)
    return tokenizer


@dataclass(frozen=True)
class TinyModelConfig:
    """Sizes of a small latent-diffusion model trained from scratch (e.g. on CPU)."""

    image_size: int = 32
    channels: int = 1
    vae_channels: tuple[int, ...] = (32, 64, 64)  # len - 1 halvings: 32 px -> 8 x 8 latents
    unet_channels: tuple[int, ...] = (64, 128)
    text_width: int = 64
    text_layers: int = 2
    max_length: int = 32
    norm_groups: int = 32

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.vae_channels) - 1)


def build_tiny_model(directory: str | Path, words: Sequence[str], config: TinyModelConfig = TinyModelConfig(),
                     seed: int = 0) -> Path:
    """Write a randomly initialised Stable-Diffusion-layout model (4 latent channels, SD's noise schedule,
    a DDIM scheduler for sampling) with a word-level tokenizer over ``words``; returns the folder."""
    diffusers = diffusers_module()
    from transformers import CLIPTextConfig, CLIPTextModel

    directory = Path(directory)
    torch.manual_seed(seed)
    tokenizer = write_word_tokenizer(words, directory / "tokenizer", config.max_length)
    levels = len(config.vae_channels)
    vae = diffusers.AutoencoderKL(
        in_channels=config.channels, out_channels=config.channels, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=config.vae_channels, layers_per_block=1, norm_num_groups=config.norm_groups,
        sample_size=config.image_size,
    )
    unet = diffusers.UNet2DConditionModel(
        sample_size=config.latent_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=config.unet_channels,
        down_block_types=("CrossAttnDownBlock2D",) + ("DownBlock2D",) * (len(config.unet_channels) - 1),
        up_block_types=("UpBlock2D",) * (len(config.unet_channels) - 1) + ("CrossAttnUpBlock2D",),
        cross_attention_dim=config.text_width, attention_head_dim=8, norm_num_groups=config.norm_groups,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=config.text_width, intermediate_size=2 * config.text_width,
        num_hidden_layers=config.text_layers, num_attention_heads=4, max_position_embeddings=config.max_length,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))
    scheduler = diffusers.DDIMScheduler(  # Stable Diffusion's training schedule
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )
    pipe = diffusers.StableDiffusionImg2ImgPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(directory)
    return directory


@dataclass
class DiffusionTrainConfig:
    """Training of a model folder on (image, caption) pairs. Steps count optimiser updates per stage."""

    vae_steps: int = 0  # > 0: train the VAE first (models trained from scratch only)
    unet_steps: int = 2000
    train_text_encoder: bool = False  # True for a text encoder without pretrained weights
    batch_size: int = 64
    lr: float = 1e-4
    vae_lr: float = 1e-3
    kl_weight: float = 1e-4
    caption_dropout: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 0
    checkpoint_seconds: float = 120.0

    def __post_init__(self) -> None:
        if self.vae_steps < 0 or self.unet_steps < 0 or self.batch_size < 1:
            raise ValueError("vae_steps and unet_steps must be >= 0 and batch_size >= 1")
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")


def to_model_range(images01: Tensor, size: int) -> Tensor:
    """Images in [0, 1] resized (bilinear, antialiased) to ``size`` and mapped to the VAE's [-1, 1]."""
    if images01.shape[-1] != size or images01.shape[-2] != size:
        images01 = F.interpolate(images01, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return images01.clamp(0, 1) * 2 - 1


def _adam_state(optimizer: torch.optim.Optimizer, params: Sequence[nn.Parameter], prefix: str) -> dict[str, Tensor]:
    state: dict[str, Tensor] = {}
    for index, param in enumerate(params):
        for key, value in optimizer.state.get(param, {}).items():
            state[f"{prefix}{index}.{key}"] = torch.as_tensor(value).clone()
    return state


def _load_adam_state(optimizer: torch.optim.Optimizer, params: Sequence[nn.Parameter], state: dict[str, Tensor],
                     prefix: str) -> None:
    for index, param in enumerate(params):
        keys = [key for key in state if key.startswith(f"{prefix}{index}.")]
        if keys:
            optimizer.state[param] = {key.rsplit(".", 1)[1]: state[key] for key in keys}


class _Stage:
    """One resumable training stage: modules + AdamW, saved to ``TRAINING_STATE`` at most every N seconds."""

    def __init__(self, name: str, modules: dict[str, nn.Module], lr: float, model_dir: Path, identity: str,
                 every_seconds: float) -> None:
        self.name, self.modules, self.path = name, modules, model_dir / TRAINING_STATE
        self.identity, self.every_seconds = identity, every_seconds
        self.params = [p for module in modules.values() for p in module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=1e-2)
        self.step, self.seconds, self._saved_at = 0, 0.0, time.perf_counter()

    def restore(self, generator: torch.Generator) -> None:
        if not self.path.is_file():
            return
        with safe_open(self.path, framework="pt") as handle:
            meta = handle.metadata() or {}
            if meta.get("stage") != self.name:
                return  # a finished earlier stage's state; this stage starts fresh
            if meta.get("identity") != self.identity:
                raise CheckpointMismatchError(
                    f"{self.path} belongs to another training (different data or settings); delete it to start over"
                )
            state = {key: handle.get_tensor(key) for key in handle.keys()}
        for name, module in self.modules.items():
            module.load_state_dict({k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")})
        _load_adam_state(self.optimizer, self.params, state, "adam.")
        generator.set_state(state["generator"])
        self.step, self.seconds = int(meta["step"]), float(meta["seconds"])

    def save(self, generator: torch.Generator) -> None:
        state = {f"{name}.{k}": v for name, module in self.modules.items() for k, v in module.state_dict().items()}
        state.update(_adam_state(self.optimizer, self.params, "adam."))
        state["generator"] = generator.get_state()
        atomic_save_tensors(self.path, state, metadata={
            "stage": self.name, "step": str(self.step), "seconds": repr(self.seconds), "identity": self.identity})
        self._saved_at = time.perf_counter()

    def run(self, steps: int, loss_fn: Callable[[], Tensor], generator: torch.Generator, max_grad_norm: float,
            log: Callable[[str], None]) -> None:
        self.restore(generator)
        for module in self.modules.values():
            module.train()
        started, last_log = time.perf_counter(), time.perf_counter()
        base_seconds = self.seconds
        while self.step < steps:
            loss = loss_fn()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{self.name} loss became {loss.item()} at step {self.step}; lower the lr")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, max_grad_norm)
            self.optimizer.step()
            self.step += 1
            self.seconds = base_seconds + time.perf_counter() - started
            if time.perf_counter() - last_log >= 30 or self.step == steps:
                log(f"{self.name} step {self.step}/{steps} loss {loss.item():.4f} {self.seconds:.0f}s")
                last_log = time.perf_counter()
            if time.perf_counter() - self._saved_at >= self.every_seconds and self.step < steps:
                self.save(generator)
        self.save(generator)


def _identity(config: DiffusionTrainConfig, images: Tensor, captions: Sequence[str]) -> str:
    import hashlib

    # step counts are targets, not identity: a run may be extended or cut short and resumed
    ignored = ("checkpoint_seconds", "vae_steps", "unet_steps")
    digest = hashlib.sha256(json.dumps({k: v for k, v in asdict(config).items() if k not in ignored},
                                       sort_keys=True).encode())
    digest.update(images.contiguous().view(torch.uint8).numpy().tobytes())
    digest.update("\n".join(captions).encode())
    return digest.hexdigest()


def train_diffusion(
    model_dir: str | Path,
    images01: Tensor,
    captions: Sequence[str],
    config: DiffusionTrainConfig,
    *,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the model in ``model_dir`` on ``images01`` (N, C, H, W in [0, 1]) with one caption per image.

    Resumable: progress is checkpointed to ``model_dir/training_state.safetensors``; a finished stage is written
    into the model folder (so a rerun skips it). Returns the training record (steps, seconds per stage), also
    written to ``model_dir/training.json``.
    """
    if len(captions) != images01.shape[0]:
        raise ValueError(f"{images01.shape[0]} images but {len(captions)} captions; give one caption per image")
    diffusers = diffusers_module()
    from transformers import CLIPTextModel, CLIPTokenizer

    path = check_model_dir(model_dir)
    record_path = path / TRAINING_RECORD
    record: dict[str, Any] = json.loads(record_path.read_text()) if record_path.is_file() else {}
    identity = _identity(config, images01, captions)
    if record.get("identity", identity) != identity:
        raise CheckpointMismatchError(f"{record_path} records a training with other data or settings; "
                                      "use a fresh copy of the model folder")
    record.update(identity=identity, config=asdict(config), num_images=int(images01.shape[0]))
    generator = torch.Generator().manual_seed(config.seed)
    vae = diffusers.AutoencoderKL.from_pretrained(path / "vae")
    size = int(vae.config.sample_size)
    pixels = to_model_range(images01.float(), size)
    n = pixels.shape[0]

    def batch() -> Tensor:
        return torch.randint(0, n, (config.batch_size,), generator=generator)

    if config.vae_steps and "vae" not in record.get("stages", {}):
        stage = _Stage("vae", {"vae": vae}, config.vae_lr, path, identity, config.checkpoint_seconds)

        def vae_loss() -> Tensor:
            x = pixels[batch()]
            posterior = vae.encode(x).latent_dist
            recon = vae.decode(posterior.sample(generator=generator)).sample
            return F.mse_loss(recon, x) + config.kl_weight * posterior.kl().mean() / posterior.mean[0].numel()

        stage.run(config.vae_steps, vae_loss, generator, config.max_grad_norm, log)
        vae.eval()
        with torch.no_grad():  # the LDM rule: scale latents to unit variance (SD's 0.18215 came from the same rule)
            sample = torch.cat([vae.encode(pixels[i:i + 256]).latent_dist.sample(generator=generator)
                                for i in range(0, min(n, 4096), 256)])
        vae.register_to_config(scaling_factor=float(1.0 / sample.std()))
        vae.save_pretrained(path / "vae")
        record.setdefault("stages", {})["vae"] = {"steps": stage.step, "seconds": round(stage.seconds, 1),
                                                  "scaling_factor": vae.config.scaling_factor}
        atomic_write_json(record_path, record)

    if config.unet_steps and "unet" not in record.get("stages", {}):
        vae.eval().requires_grad_(False)
        tokenizer = CLIPTokenizer.from_pretrained(path / "tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(path / "text_encoder")
        text_encoder.requires_grad_(config.train_text_encoder)
        unet = diffusers.UNet2DConditionModel.from_pretrained(path / "unet")
        noise_scheduler = diffusers.DDPMScheduler.from_pretrained(path / "scheduler")
        cache: dict[str, Tensor] = {}

        @torch.no_grad()
        def moments() -> Tensor:
            """Posterior moments of every image, encoded once at the first step (not at all when a resumed run is
            already done); a fresh sample is drawn per step, as the script does."""
            if "moments" not in cache:
                cache["moments"] = torch.cat([vae.encode(pixels[i:i + 256]).latent_dist.parameters
                                              for i in range(0, n, 256)])
            return cache["moments"]

        ids = tokenizer(list(captions), padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        empty = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length,
                          return_tensors="pt").input_ids
        scale = vae.config.scaling_factor
        modules: dict[str, nn.Module] = {"unet": unet}
        if config.train_text_encoder:
            modules["text_encoder"] = text_encoder
        else:
            text_encoder.eval()
        stage = _Stage("unet", modules, config.lr, path, identity, config.checkpoint_seconds)

        def unet_loss() -> Tensor:
            idx = batch()
            mean, logvar = moments()[idx].chunk(2, dim=1)
            z0 = (mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * torch.randn(mean.shape, generator=generator)) * scale
            tokens = ids[idx].clone()
            drop = torch.rand(len(idx), generator=generator) < config.caption_dropout
            tokens[drop] = empty
            noise = torch.randn(z0.shape, generator=generator)
            t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(idx),), generator=generator)
            noisy = noise_scheduler.add_noise(z0, noise, t)
            with torch.set_grad_enabled(config.train_text_encoder):
                context = text_encoder(tokens)[0]
            return F.mse_loss(unet(noisy, t, encoder_hidden_states=context).sample, noise)

        stage.run(config.unet_steps, unet_loss, generator, config.max_grad_norm, log)
        unet.save_pretrained(path / "unet")
        if config.train_text_encoder:
            text_encoder.save_pretrained(path / "text_encoder")
        record.setdefault("stages", {})["unet"] = {"steps": stage.step, "seconds": round(stage.seconds, 1)}
        atomic_write_json(record_path, record)
    record["total_seconds"] = round(sum(s["seconds"] for s in record.get("stages", {}).values()), 1)
    record["threads"] = torch.get_num_threads()
    atomic_write_json(record_path, record)
    (path / TRAINING_STATE).unlink(missing_ok=True)
    return record


def steps_for_epochs(num_images: int, epochs: float, batch_size: int) -> int:
    """Optimiser steps covering ``epochs`` passes over ``num_images`` at ``batch_size``."""
    return max(1, math.ceil(epochs * num_images / batch_size))
