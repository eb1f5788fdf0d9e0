"""Resumable evaluation: an interrupted model training continues bit-for-bit from its checkpoint."""

import pytest
import torch

from distillset.coreset import select_coreset
from distillset.evaluate import EvalConfig, evaluate_synthetic, protocol
from distillset.io import ArtifactError, CheckpointMismatchError
from distillset.nets import get_network
from distillset.training import TrainingCheckpoint, train_classifier, training_identity

CONFIG = EvalConfig(epochs=6, num_models=1, batch_size=8)  # lr decay at epoch 4; 20 images -> 3 batches/epoch
CPU = torch.device("cpu")


class Interrupted(Exception):
    pass


class InterruptAfter:
    """A forward that stops the training (like Ctrl-C or a killed job) at its ``calls``-th batch."""

    def __init__(self, net, calls):
        self.net, self.calls = net, calls

    def __call__(self, x):
        self.calls -= 1
        if self.calls < 0:
            raise Interrupted
        return self.net(x)


def _train(small_set, info, stem=None, interrupt_after=None):
    generator = torch.Generator().manual_seed(7)
    net = get_network(CONFIG.model, info.channels, info.num_classes, info.image_size, seed=7)
    checkpoint = None
    if stem is not None:
        checkpoint = TrainingCheckpoint(stem, training_identity(net, small_set, CONFIG, generator), every_seconds=0)
    forward = net if interrupt_after is None else InterruptAfter(net, interrupt_after)
    train_classifier(net, small_set, CONFIG, generator=generator, device=CPU, forward=forward, checkpoint=checkpoint)
    return net


@pytest.mark.parametrize("interrupt_after", [4, 13, 16])  # in epoch 1; in epoch 4 (the decay epoch); in epoch 5
def test_interrupted_training_resumes_bit_for_bit(digits, small_set, tmp_path, interrupt_after):
    reference = _train(small_set, digits.info)
    stem = tmp_path / "model0"
    with pytest.raises(Interrupted):
        _train(small_set, digits.info, stem, interrupt_after)
    assert stem.with_suffix(".safetensors").is_file()
    resumed = _train(small_set, digits.info, stem)
    for (name, expected), actual in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(expected, actual), name
    # writing checkpoints (here after every epoch) does not change the training
    restarted = _train(small_set, digits.info, tmp_path / "other", interrupt_after=None)
    assert torch.equal(restarted.classifier.weight, reference.classifier.weight)


def test_checkpoint_of_another_training_is_refused(digits, small_set, tmp_path):
    stem = tmp_path / "model0"
    with pytest.raises(Interrupted):
        _train(small_set, digits.info, stem, interrupt_after=5)
    other = select_coreset(digits, "random", 2, seed=1)
    with pytest.raises(CheckpointMismatchError, match="delete it"):
        _train(other, digits.info, stem)
    stem.with_suffix(".safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ArtifactError, match="unreadable"):
        _train(small_set, digits.info, stem)


def test_evaluation_keeps_tested_models_and_resumes_the_rest(digits, small_set, tmp_path, monkeypatch):
    config = EvalConfig(epochs=3, num_models=2, batch_size=8)
    plain = evaluate_synthetic(small_set, digits.test, digits.info, config)
    first = evaluate_synthetic(small_set, digits.test, digits.info, config, checkpoint_dir=tmp_path)
    assert first.accuracies == plain.accuracies
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model0.json", "model1.json"]  # training state dropped

    def no_training(*args, **kwargs):
        raise AssertionError("a tested model was trained again")

    monkeypatch.setattr(protocol, "train_classifier", no_training)
    again = evaluate_synthetic(small_set, digits.test, digits.info, config, checkpoint_dir=tmp_path)
    assert again.accuracies == first.accuracies
    assert [m.train_seconds for m in again.models] == [m.train_seconds for m in first.models]
    with pytest.raises(CheckpointMismatchError):  # the same folder for a different set
        evaluate_synthetic(select_coreset(digits, "random", 2, seed=1), digits.test, digits.info, config,
                           checkpoint_dir=tmp_path)
    (tmp_path / "model1.json").write_text("{truncated")
    with pytest.raises(ArtifactError, match="model1.json is unreadable"):
        evaluate_synthetic(small_set, digits.test, digits.info, config, checkpoint_dir=tmp_path)


def test_identity_covers_bf16_sets_and_tells_sets_apart(digits, small_set):
    config = EvalConfig()
    net = get_network(config.model, digits.info.channels, digits.info.num_classes, digits.info.image_size, seed=0)

    def identity(images):
        generator = torch.Generator().manual_seed(0)
        return training_identity(net, type(small_set)(images, small_set.labels), config, generator)

    assert identity(small_set.images) == identity(small_set.images.clone())
    assert identity(small_set.images) != identity(small_set.images + 1e-3)
    assert identity(small_set.images.bfloat16()) != identity(small_set.images)
