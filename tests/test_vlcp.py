"""VLCP stages: LOF, k-means prototypes, Algorithm 2, captions, tokenizer, tiny-model training and img2img."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from distillset.generative.captions import (  # noqa: E402
    CaptionRecord,
    captions_for,
    image_attributes,
    measured_captions,
    read_captions,
    write_captions,
)
from distillset.generative.diffusion import (  # noqa: E402
    DiffusionTrainConfig,
    TinyModelConfig,
    build_tiny_model,
    load_pipeline,
    train_diffusion,
    write_word_tokenizer,
)
from distillset.generative.vlcp import (  # noqa: E402
    Prototypes,
    VLCPConfig,
    caption_tokens,
    compute_prototypes,
    image_prototypes,
    remove_outliers,
    synthesize,
    text_prototypes,
)
from distillset.io import CheckpointMismatchError  # noqa: E402

TINY = TinyModelConfig(image_size=16, vae_channels=(8, 8), unet_channels=(8, 16), text_width=16, text_layers=1,
                       max_length=24, norm_groups=4)


def test_lof_removes_planted_outliers():
    rng = np.random.default_rng(0)
    inliers = rng.normal(size=(200, 16))
    outliers = rng.normal(size=(6, 16)) + 25.0
    keep = remove_outliers(np.concatenate([inliers, outliers]), contamination=0.03)
    assert not keep[200:].any()
    assert keep[:200].mean() > 0.98
    assert remove_outliers(outliers, contamination=0.0).all()  # alpha 0 skips LOF, as the authors' CIFAR runs


def test_kmeans_prototypes_one_centre_per_image_slot():
    rng = np.random.default_rng(1)
    blobs = np.concatenate([rng.normal(size=(30, 4)) * 0.1 + shift for shift in (-5.0, 0.0, 5.0)])
    centres, clusters = image_prototypes(blobs, 3, seed=0)
    assert centres.shape == (3, 4) and clusters.shape == (90,)
    np.testing.assert_allclose(np.sort(centres[:, 0]), [-5.0, 0.0, 5.0], atol=0.1)  # the blob means
    with pytest.raises(ValueError, match="fewer than ipc"):
        image_prototypes(blobs[:2], 3, seed=0)


CLASS_CAPTIONS = [
    "a furry dog running",  # cluster 0
    "a furry brown dog with spots",
    "a brown dog with spots and a collar",
    "a furry black dog sleeping",  # cluster 1
    "a furry black dog sleeping on a black sofa",
]
CLUSTERS = [0, 0, 0, 1, 1]


def test_algorithm2_drops_common_words_and_scores_by_top_words():
    # furry is in 4 of 5 captions: with beta 0.6 it is non-representative (Eq. 2), so "brown" (count 2, first
    # seen before "spots") is the cluster-0 top word and the first caption holding it wins; with beta 1.0
    # "furry" stays and is seen first, so the first caption wins.
    assert text_prototypes(CLASS_CAPTIONS, CLUSTERS, 2, "dog", beta=0.6, top_k=1)[0] == CLASS_CAPTIONS[1]
    assert text_prototypes(CLASS_CAPTIONS, CLUSTERS, 2, "dog", beta=1.0, top_k=1)[0] == CLASS_CAPTIONS[0]
    # cluster 1 with top-3 words black (3), sleeping (2), sofa (1): scores 5 vs 6 -> the second caption
    assert text_prototypes(CLASS_CAPTIONS, CLUSTERS, 2, "dog", beta=0.6, top_k=3)[1] == CLASS_CAPTIONS[4]
    # top-2 (black, sleeping): a tie at 5, the first (closest) caption wins
    assert text_prototypes(CLASS_CAPTIONS, CLUSTERS, 2, "dog", beta=0.6, top_k=2)[1] == CLASS_CAPTIONS[3]


def test_algorithm2_faithful_substring_quirks_and_empty_fallback():
    captions = ["a tired cat", "a red cat", "a red cat"]
    # "red" is the top word; as a substring it also matches "tired", so the authors' code picks the first caption
    assert text_prototypes(captions, [0, 0, 0], 1, "cat", top_k=1, beta=1.0) == ["a red cat"]
    assert text_prototypes(captions, [0, 0, 0], 1, "cat", top_k=1, beta=1.0, faithful=True) == ["a tired cat"]
    # only stop words and the class name: every score is 0 -> empty prompt (faithful) or the closest caption
    plain = ["a cat", "the cat"]
    assert text_prototypes(plain, [0, 0], 1, "cat", faithful=True) == [""]
    assert text_prototypes(plain, [0, 0], 1, "cat") == ["a cat"]
    assert caption_tokens("A T-shirt's 2 red, Sleeves!") == ["a", "red", "sleeves"]


def test_image_attributes_hand_computed():
    image = torch.zeros(1, 1, 4, 4)
    image[0, 0, 1:3, 1] = 0.5  # a 2 x 1 bar
    measured = {k: float(v[0]) for k, v in image_attributes(image).items()}
    assert measured == pytest.approx({"tone": 0.5, "size": 2 / 16, "shape": 2.0, "texture": 0.75, "fill": 1.0,
                                      "symmetry": 0.125})


def test_measured_captions_name_the_class_and_bin_at_tertiles():
    images = torch.zeros(3, 1, 8, 8)
    for i, level in enumerate((0.2, 0.5, 0.9)):
        images[i, 0, 2:6, 2:6] = level
    records = measured_captions(images, torch.tensor([0, 1, 1]), ["Coat", "Bag"])
    assert [r.caption.split()[1:3] for r in records] == [["dark", "coat"], ["grey", "bag"], ["light", "bag"]]


def test_captions_file_roundtrip_and_checks(tmp_path):
    path = write_captions(tmp_path / "c.jsonl", [CaptionRecord(0, 1, "a bag"), CaptionRecord(1, 0, "a coat", "x.png")])
    records = read_captions(path)
    assert records[1].path == "x.png"
    assert captions_for(records, torch.tensor([1, 0])) == ["a bag", "a coat"]
    with pytest.raises(ValueError, match="no caption"):
        captions_for(records, torch.tensor([1, 0, 0]))
    with pytest.raises(ValueError, match="disagree"):
        captions_for(records, torch.tensor([0, 0]))
    (tmp_path / "bad.jsonl").write_text(json.dumps({"index": 0, "caption": "x"}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        read_captions(tmp_path / "bad.jsonl")


def test_word_tokenizer_spells_known_words_as_one_token(tmp_path):
    tokenizer = write_word_tokenizer(["dark", "shirt", "t"], tmp_path / "tok", max_length=16)
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("A dark T-shirt, zz").input_ids)
    assert tokens == ["<|startoftext|>", "a</w>", "dark</w>", "t</w>", "-</w>", "shirt</w>", ",</w>", "z", "z</w>",
                      "<|endoftext|>"]
    with pytest.raises(ValueError, match="characters outside"):
        write_word_tokenizer(["café"], tmp_path / "bad")


def _toy_data(n: int = 24) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Two classes: a bright square (top left) and a bright bar (right), 12 images each, 16 x 16."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, 16, 16, generator=generator) * 0.1
    labels = torch.arange(n) % 2
    images[labels == 0, :, 2:8, 2:8] += 0.8
    images[labels == 1, :, 2:14, 10:13] += 0.8
    records = measured_captions(images, labels, ["box", "bar"])
    return images.clamp(0, 1), labels, [r.caption for r in records]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    images, labels, captions = _toy_data()
    words = sorted({w for c in captions for w in c.replace(",", " ").split()})
    model = build_tiny_model(tmp_path_factory.mktemp("vlcp") / "model", words, TINY)
    record = train_diffusion(model, images, captions,
                             DiffusionTrainConfig(vae_steps=30, unet_steps=3, batch_size=8, train_text_encoder=True),
                             log=lambda message: None)
    return model, record


def test_training_records_cost_scales_latents_and_is_resumable(tiny_model):
    model, record = tiny_model
    assert record["stages"]["vae"]["steps"] == 30 and record["stages"]["unet"]["steps"] == 3
    assert record["stages"]["vae"]["seconds"] > 0
    assert not (model / "training_state.safetensors").exists()
    # the VAE learnt to reconstruct the toy images (reconstruction error well under the untrained one's)
    pipe = load_pipeline(model)
    images, _, captions = _toy_data()
    x = images * 2 - 1
    with torch.no_grad():
        error = torch.nn.functional.mse_loss(pipe.vae.decode(pipe.vae.encode(x).latent_dist.mean).sample, x)
    assert error < 0.1
    # a finished training is not redone; other data is refused
    again = train_diffusion(model, images, captions, DiffusionTrainConfig(vae_steps=30, unet_steps=3, batch_size=8,
                                                                          train_text_encoder=True))
    assert again["stages"] == record["stages"]
    with pytest.raises(CheckpointMismatchError):
        train_diffusion(model, images.flip(0), captions, DiffusionTrainConfig(batch_size=8, train_text_encoder=True))


def test_prototypes_and_img2img_from_them(tiny_model, tmp_path):
    model, _ = tiny_model
    images, labels, captions = _toy_data()
    pipe = load_pipeline(model)
    config = VLCPConfig(ipc=2, contamination=0.1, lof_neighbors=5, steps=4, batch_size=4)
    prototypes = compute_prototypes(images, labels, captions, ["box", "bar"], pipe.vae, config)
    assert prototypes.latents.shape == (4, 4, 8, 8)
    assert prototypes.labels.tolist() == [0, 0, 1, 1]
    assert all(9 <= n < 12 for n in prototypes.inliers)  # LOF at 10 % removed one or two of 12 per class
    assert all(text in captions for text in prototypes.texts)
    assert all((" box " in t) == (i < 2) for i, t in enumerate(prototypes.texts))
    saved = Prototypes.load(prototypes.save(tmp_path / "p.safetensors", config))
    assert torch.equal(saved.latents, prototypes.latents) and saved.texts == prototypes.texts
    out = synthesize(pipe, prototypes, prototypes.texts, config)
    assert out.shape == (4, 1, 16, 16) and 0.0 <= out.min() and out.max() <= 1.0
    again = synthesize(pipe, prototypes, prototypes.texts, config)
    assert torch.equal(out, again)  # seeded
    other_text = synthesize(pipe, prototypes, [""] * 4, config)
    assert not torch.equal(out, other_text)  # the prompt reaches the UNet
