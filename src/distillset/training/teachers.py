"""Teachers: classifiers trained on a dataset's full training split, stored as verifiable artifacts.

A teacher is what the teacher-based halves of the seed methods start from: ELF's feature network (an expert
trained with DSA on all real images, ``buffer.py`` of Lirui-Zhao/ELF), the squeeze model of UniDD/CFM's
decoupled pipeline (its statistics and its soft labels), coreset feature networks.

One teacher = one folder ``<root>/<key>/`` with ``teacher.safetensors`` (the weights), ``manifest.json``
(the :class:`TeacherRecipe`, the test accuracy, the training time and the weights' sha256) and, while it
trains, ``training.safetensors`` (a :class:`~distillset.training.TrainingCheckpoint`, so a stopped training
resumes where it stopped). ``key`` is derived from the recipe, so :func:`train_teacher` returns the cached
teacher when the same recipe was trained before. The default root is ``cache_dir() / "teachers"``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from distillset.data import dataset_info
from distillset.data.base import DatasetInfo, DatasetSplits, ImageSet
from distillset.io import ArtifactError, atomic_save_tensors, atomic_write_json, sha256_file
from distillset.nets import get_network
from distillset.nets.base import StagedNetwork
from distillset.runtime import precision_autocast, resolve_precision, runtime_record
from distillset.training.classifier import (
    EvalConfig,
    Relabel,
    TrainingCheckpoint,
    compiled,
    test_accuracy,
    train_classifier,
    training_identity,
)
from distillset.training.features import cache_dir

WEIGHTS_NAME = "teacher.safetensors"
MANIFEST_NAME = "manifest.json"
TRAINING_NAME = "training"  # stem of the TrainingCheckpoint


@dataclass
class TeacherRecipe:
    """Everything that determines a teacher (saved in its manifest; its digest names the folder).

    ``epochs`` counts passes over the training split; the learning rate is multiplied by 0.1 after half of
    them (the ``--decay`` schedule of the MTT/ELF ``buffer.py``; lr, momentum, weight decay, batch and DSA
    strategy are the evaluation protocol's, which ``buffer.py`` shares).
    """

    dataset: str
    model: str = "convnet3"
    epochs: int = 20
    dsa: bool = True
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    precision: str = "fp32"  # as it runs: resolve "auto" before building a recipe (train_teacher does)
    seed: int = 0
    train_size: int = 0  # images in the training split (a recipe of another split size is another teacher)
    network_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"a teacher trains for at least one epoch (got epochs={self.epochs})")

    def key(self) -> str:
        """Folder name: readable prefix + the first 10 hex digits of the recipe's sha256."""
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]
        tags = "".join(f"-{name}{value}" for name, value in sorted(self.network_options.items()))
        return f"{self.dataset}-{self.model}{tags}-e{self.epochs}{'-dsa' if self.dsa else ''}-s{self.seed}-{digest}"

    def eval_config(self) -> EvalConfig:
        """The classifier-training settings: the protocol's loop runs ``epochs + 1`` epochs, so ``epochs - 1``."""
        return EvalConfig(model=self.model, epochs=self.epochs - 1, num_models=1, lr=self.lr, momentum=self.momentum,
                          weight_decay=self.weight_decay, batch_size=self.batch_size, dsa=self.dsa,
                          dsa_strategy=self.dsa_strategy, precision=self.precision, compile=False, seed=self.seed)


@dataclass
class Teacher:
    """A loaded teacher: the network (eval mode), its manifest and its folder."""

    net: StagedNetwork
    manifest: dict[str, Any]
    path: Path

    @property
    def recipe(self) -> TeacherRecipe:
        return TeacherRecipe(**self.manifest["recipe"])

    @property
    def test_accuracy(self) -> float:
        return float(self.manifest["test_accuracy"])

    @torch.inference_mode()
    def logits(self, images: Tensor, batch_size: int = 500) -> Tensor:
        """The teacher's fp32 logits on ``images`` (no augmentation), on the CPU."""
        self.net.eval()
        device = next(self.net.parameters()).device
        return torch.cat([self.net(images[i : i + batch_size].to(device)).float().cpu()
                          for i in range(0, len(images), batch_size)])

    def relabel(self, temperature: float = 1.0, precision: str = "auto") -> Relabel:
        """FKD-style relabelling by this teacher (its logits of every augmented training batch, under the
        evaluation's ``precision``)."""
        device = next(self.net.parameters()).device
        resolved = resolve_precision(precision, device)

        def teacher_logits(images: Tensor) -> Tensor:  # Relabel.loss calls it without autograd
            self.net.eval()
            with precision_autocast(device, resolved):
                return self.net(images).float()

        return Relabel(teacher_logits, temperature, identity=self.manifest["sha256"])

    def soft_labels(self, images: Tensor, temperature: float = 1.0) -> Tensor:
        """softmax(logits / T): the teacher's class probabilities (soft-label evaluation, FKD-style relabel)."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 (got {temperature})")
        return torch.softmax(self.logits(images) / temperature, dim=1)


def teachers_root(root: str | Path | None = None) -> Path:
    """``root`` or ``cache_dir() / "teachers"``."""
    return Path(root) if root is not None else cache_dir() / "teachers"


def make_recipe(splits: DatasetSplits, model: str = "convnet3", *, epochs: int = 20, dsa: bool = True,
                seed: int = 0, precision: str = "auto", device: str | torch.device = "cpu",
                network_options: dict[str, Any] | None = None, **settings: Any) -> TeacherRecipe:
    """The recipe of a teacher of ``splits`` (``precision`` resolved for ``device``; ``settings`` are further
    :class:`TeacherRecipe` fields such as ``lr``)."""
    return TeacherRecipe(dataset=splits.info.name, model=model, epochs=epochs, dsa=dsa, seed=seed,
                         precision=resolve_precision(precision, device), train_size=len(splits.train),
                         network_options=dict(network_options or {}), **settings)


def _build(recipe: TeacherRecipe, info: DatasetInfo) -> StagedNetwork:
    return get_network(recipe.model, info.channels, info.num_classes, info.image_size,
                       seed=recipe.seed, **recipe.network_options)


def train_teacher(
    splits: DatasetSplits,
    recipe: TeacherRecipe,
    *,
    root: str | Path | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    compile: bool = False,
    checkpoint_seconds: float = 120.0,
    folder: str | Path | None = None,
) -> Teacher:
    """Train the teacher of ``recipe`` on ``splits.train`` (all of it) and test it on ``splits.test``; or return
    the stored one when ``<root>/<recipe.key()>`` (or ``folder``, when given) already holds it. A stopped
    training resumes from its checkpoint (bit-for-bit the weights of an uninterrupted run)."""
    if recipe.dataset != splits.info.name or recipe.train_size != len(splits.train):
        raise ValueError(
            f"the recipe is for {recipe.dataset} with {recipe.train_size} training images, the data is "
            f"{splits.info.name} with {len(splits.train)}; build the recipe with make_recipe(splits, ...)"
        )
    folder = Path(folder) if folder is not None else teachers_root(root) / recipe.key()
    if (folder / MANIFEST_NAME).is_file():
        stored = load_teacher(folder, device=device)
        if stored.recipe != recipe:
            raise ValueError(f"{folder} holds a teacher of another recipe ({stored.recipe}); pick another folder")
        return stored
    device = torch.device(device)
    net = _build(recipe, splits.info).to(device)
    config = recipe.eval_config()
    config.compile = compile
    generator = torch.Generator().manual_seed(recipe.seed)
    checkpoint = TrainingCheckpoint(folder / TRAINING_NAME, training_identity(net, splits.train, config, generator),
                                    every_seconds=checkpoint_seconds)
    started = time.perf_counter()
    forward = compiled(net, config)
    train_classifier(net, splits.train, config, generator=generator, device=device, progress=progress,
                     forward=forward, checkpoint=checkpoint)
    train_seconds = checkpoint.earlier_seconds + time.perf_counter() - started
    accuracy, per_class = test_accuracy(net, splits.test, splits.info.num_classes, device=device, config=config,
                                        forward=forward)
    weights = folder / WEIGHTS_NAME
    atomic_save_tensors(weights, net.state_dict())
    manifest = {
        "kind": "distillset-teacher",
        "recipe": asdict(recipe),
        "test_accuracy": accuracy,
        "per_class_accuracy": per_class,
        "train_seconds": train_seconds,
        "weights": WEIGHTS_NAME,
        "sha256": sha256_file(weights),
        "parameters": sum(p.numel() for p in net.parameters()),
        "runtime": runtime_record(device, recipe.precision, compile),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(folder / MANIFEST_NAME, manifest)
    checkpoint.path.unlink(missing_ok=True)
    return Teacher(net.eval(), manifest, folder)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of the teacher folder ``path`` (or of the folder of a given ``manifest.json``)."""
    path = Path(path)
    folder = path.parent if path.name == MANIFEST_NAME else path
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(
            f"{folder} is not a teacher (no {MANIFEST_NAME}); train one with `distillset teacher train` "
            "or list the stored ones with `distillset teacher list`"
        ) from exc
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"teacher manifest {folder / MANIFEST_NAME} is unreadable ({exc})") from exc
    if manifest.get("kind") != "distillset-teacher":
        raise ArtifactError(f"{folder / MANIFEST_NAME} is not a teacher manifest")
    return manifest


def load_teacher(path: str | Path, *, device: str | torch.device = "cpu", verify: bool = True) -> Teacher:
    """The teacher stored in folder ``path``; its weights are checked against the manifest's sha256."""
    folder = Path(path)
    folder = folder.parent if folder.name in (MANIFEST_NAME, WEIGHTS_NAME) else folder
    manifest = read_manifest(folder)
    weights = folder / manifest["weights"]
    if not weights.is_file():
        raise ArtifactError(f"teacher weights {weights} are missing; rebuild them with `distillset teacher train`")
    if verify and sha256_file(weights) != manifest["sha256"]:
        raise ArtifactError(f"teacher weights {weights} do not match the sha256 in its manifest (changed or corrupt)")
    recipe = TeacherRecipe(**manifest["recipe"])
    net = _build(recipe, dataset_info(recipe.dataset))
    net.load_state_dict(load_file(weights))
    return Teacher(net.to(device).eval(), manifest, folder)


def teacher_of(teacher: str | Path | Teacher, info: DatasetInfo, *, use: str, fix: str = "",
               device: str | torch.device = "cpu") -> Teacher:
    """``teacher`` (a folder, loaded with its sha256 checked, or a loaded :class:`Teacher`), refused with a
    ValueError unless it was trained on ``info``'s dataset (same name, channels and image size); ``use`` names
    the part that takes it and ``fix`` (default: train one with ``distillset teacher train``) the remedy, for the
    error."""
    loaded = teacher if isinstance(teacher, Teacher) else load_teacher(teacher, device=device)
    trained_on = dataset_info(loaded.recipe.dataset)
    shapes = ((trained_on.channels, *trained_on.image_size), (info.channels, *info.image_size))
    if loaded.recipe.dataset != info.name or shapes[0] != shapes[1]:
        raise ValueError(
            f"{use}: the teacher {loaded.path} was trained on {loaded.recipe.dataset} (images {shapes[0]}), the data "
            f"is {info.name} (images {shapes[1]}); pass a teacher of {info.name} "
            + (fix or f"(`distillset teacher train --dataset {info.name}`, then `distillset teacher list`)")
        )
    return loaded


def teacher_record(teacher: Teacher) -> dict[str, Any]:
    """What a run made with ``teacher`` records about it (its folder, weights' sha256 and test accuracy)."""
    return {"path": str(teacher.path), "sha256": teacher.manifest["sha256"], "test_accuracy": teacher.test_accuracy}


def list_teachers(root: str | Path | None = None) -> list[dict[str, Any]]:
    """Manifests of the finished teachers under ``root`` (each with its ``path``), sorted by folder name."""
    found = []
    for manifest_path in sorted(teachers_root(root).glob(f"*/{MANIFEST_NAME}")):
        try:
            found.append({**read_manifest(manifest_path), "path": str(manifest_path.parent)})
        except ArtifactError:
            continue
    return found


def teachers_in_training(root: str | Path | None = None) -> list[Path]:
    """Folders with a training checkpoint and no manifest yet (stopped or running trainings)."""
    return sorted(p.parent for p in teachers_root(root).glob(f"*/{TRAINING_NAME}.safetensors")
                  if not (p.parent / MANIFEST_NAME).is_file())



def with_soft_labels(synthetic: ImageSet, teacher: Teacher, temperature: float = 1.0) -> ImageSet:
    """``synthetic`` relabelled with the teacher's probabilities softmax(logits / T) on its un-augmented images
    (evaluation then trains on them with :func:`~distillset.training.soft_cross_entropy`)."""
    return ImageSet(synthetic.images, synthetic.labels, teacher.soft_labels(synthetic.images, temperature))


def normalized_entropy(probabilities: Tensor) -> float:
    """Mean entropy of the rows of ``probabilities`` divided by log(C): 0 for one-hot labels, 1 for uniform ones
    (soft labels near 1 carry almost no class information)."""
    entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=1)
    return float(entropy.mean() / math.log(probabilities.shape[1]))


def soft_label_record(teacher: Teacher, images: Tensor, temperature: float, relabel: str = "fixed") -> dict[str, Any]:
    """What an evaluation with a teacher's soft labels of ``images`` records (every table labels its rows with
    it); ``relabel``: ``fixed`` (labels of the un-augmented images) or ``augmented`` (every augmented batch).
    ``normalized_entropy`` is that of the teacher's labels of the un-augmented images."""
    return {"labels": "soft", "teacher": str(teacher.path), "teacher_sha256": teacher.manifest["sha256"],
            "teacher_test_accuracy": teacher.test_accuracy, "temperature": temperature, "relabel": relabel,
            "normalized_entropy": round(normalized_entropy(teacher.soft_labels(images, temperature)), 4)}
