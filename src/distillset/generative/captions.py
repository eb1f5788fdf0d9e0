"""Captions: one description per training image (VLCP stage 1).

Three sources, one record format (JSONL, one object per line: ``{"index", "label", "caption"}`` and optionally
``"path"``), so captions made elsewhere can be brought in:

* :func:`llava_captions`: an open vision-language model (LLaVA v1.5 in the paper) through transformers, loaded
  from a local folder, with the paper's prompt (Sec. 3.1).
* :func:`read_captions`: a captions file written by any other tool.
* :func:`measured_captions`: a stand-in for when no captioning model is available: the class name plus
  attributes measured from the pixels (tone, size, shape, texture, fill, symmetry; each binned at the data's
  tertiles). These are not LLaVA descriptions; they give the text prototypes something image-specific to choose
  from, as the paper's captions do.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from distillset.io import atomic_write_bytes

LLAVA_PROMPT = ("Describe the physical appearance of the {classname} in the image. Include details about its shape, "
                "posture, color, and any distinct features.")


@dataclass(frozen=True)
class CaptionRecord:
    """The caption of training image ``index`` (position in the training split) of class ``label``."""

    index: int
    label: int
    caption: str
    path: str | None = None


def write_captions(path: str | Path, records: Sequence[CaptionRecord]) -> Path:
    """Write records as JSONL (atomically); returns the path."""
    lines = (json.dumps({k: v for k, v in asdict(r).items() if v is not None}) + "\n" for r in records)
    atomic_write_bytes(Path(path), "".join(lines).encode())
    return Path(path)


def read_captions(path: str | Path) -> list[CaptionRecord]:
    """Read a JSONL captions file; every line needs ``index`` (int), ``label`` (int) and ``caption`` (str)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"captions file {path} not found; create it with `distillset vlcp captions`")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            records.append(CaptionRecord(int(obj["index"]), int(obj["label"]), str(obj["caption"]), obj.get("path")))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{path}:{number}: expected a JSON object with 'index' (int), 'label' (int) and 'caption' (str): {exc}"
            ) from exc
    return records


def captions_for(records: Sequence[CaptionRecord], labels: Tensor) -> list[str]:
    """Captions in training-set order; checks that every image has exactly one and that the labels agree."""
    by_index = {}
    for record in records:
        if record.index in by_index:
            raise ValueError(f"captions file has two captions for image {record.index}")
        by_index[record.index] = record
    missing = [i for i in range(len(labels)) if i not in by_index]
    if missing:
        raise ValueError(f"{len(missing)} training images have no caption (first: {missing[:5]}); caption every "
                         "image of the training split (e.g. `distillset vlcp captions`)")
    wrong = [i for i in range(len(labels)) if by_index[i].label != int(labels[i])]
    if wrong:
        raise ValueError(f"captions file labels disagree with the dataset at images {wrong[:5]}: "
                         "was it made for another dataset or split?")
    return [by_index[i].caption for i in range(len(labels))]


ATTRIBUTE_WORDS = {
    "tone": ("dark", "grey", "light"),
    "size": ("small", "medium", "large"),
    "shape": ("wide", "square", "tall"),
    "texture": ("plain", "textured", "patterned"),
    "fill": ("sparse", "full", "solid"),
    "symmetry": ("symmetric", "uneven", "lopsided"),
}


def image_attributes(images01: Tensor, threshold: float = 0.1) -> dict[str, Tensor]:
    """Per-image measurements of ``images01`` (N, C, H, W in [0, 1]) on the foreground (grey level > threshold).

    tone: mean foreground intensity; size: foreground fraction of the image; shape: bounding-box height / width;
    texture: mean absolute neighbour difference inside the foreground; fill: foreground fraction of the bounding
    box; symmetry: mean absolute difference between the image and its mirror image.
    """
    gray = images01.float().mean(dim=1)
    mask = gray > threshold
    area = mask.flatten(1).sum(1).clamp_min(1)
    rows, cols = mask.any(dim=2), mask.any(dim=1)
    height, width = rows.sum(1).clamp_min(1), cols.sum(1).clamp_min(1)
    dx = (gray[:, :, 1:] - gray[:, :, :-1]).abs() * mask[:, :, 1:]
    dy = (gray[:, 1:, :] - gray[:, :-1, :]).abs() * mask[:, 1:, :]
    return {
        "tone": (gray * mask).flatten(1).sum(1) / area,
        "size": area / mask[0].numel(),
        "shape": height / width,
        "texture": (dx.flatten(1).sum(1) + dy.flatten(1).sum(1)) / area,
        "fill": area / (height * width),
        "symmetry": (gray - gray.flip(-1)).abs().flatten(1).mean(1),
    }


def measured_captions(images01: Tensor, labels: Tensor, class_names: Sequence[str]) -> list[CaptionRecord]:
    """Stand-in captions: "a <tone> <class> that is <size> and <shape>, with a <texture> surface, a <fill> outline
    and a <symmetry> form", each attribute binned at its tertiles over ``images01``."""
    measured = image_attributes(images01)
    words = {}
    for name, values in measured.items():
        edges = torch.quantile(values.double(), torch.tensor([1 / 3, 2 / 3], dtype=torch.float64))
        words[name] = torch.bucketize(values.double(), edges).tolist()
    records = []
    for i, label in enumerate(labels.tolist()):
        w = {name: ATTRIBUTE_WORDS[name][words[name][i]] for name in ATTRIBUTE_WORDS}
        caption = (f"a {w['tone']} {class_names[label].lower()} that is {w['size']} and {w['shape']}, with a "
                   f"{w['texture']} surface, a {w['fill']} outline and a {w['symmetry']} form")
        records.append(CaptionRecord(i, label, caption))
    return records


def llava_captions(
    model_path: str | Path,
    images01: Tensor,
    labels: Tensor,
    class_names: Sequence[str],
    *,
    prompt: str = LLAVA_PROMPT,
    max_new_tokens: int = 256,
    device: str | torch.device = "cpu",
) -> list[CaptionRecord]:
    """Caption every image with a LLaVA checkpoint in transformers format at ``model_path`` (e.g.
    ``llava-hf/llava-1.5-7b-hf`` downloaded elsewhere). Greedy decoding, so captions are reproducible (the paper
    samples at temperature 0.2). Post-processing as the authors' script: double quotes and ``'s`` removed."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    path = Path(model_path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} holds no transformers model (config.json missing); download a LLaVA "
                                "checkpoint such as llava-hf/llava-1.5-7b-hf to that folder, or use --source file")
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    model = LlavaForConditionalGeneration.from_pretrained(path, local_files_only=True).to(device).eval()
    records = []
    for i, label in enumerate(labels.tolist()):
        question = prompt.format(classname=class_names[label])
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        text = processor.apply_chat_template(conversation, add_generation_prompt=True)
        pixels = (images01[i].expand(3, -1, -1).permute(1, 2, 0).clamp(0, 1) * 255).to(torch.uint8).numpy()
        inputs = processor(images=pixels, text=text, return_tensors="pt").to(device)
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        answer = processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        records.append(CaptionRecord(i, label, answer.replace('"', "").replace("'s", "")))
    return records
