import json
import math

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import distillset.evaluate.elf as elf_module
from distillset.artifacts import save_run
from distillset.cli import app
from distillset.data import dataset_info
from distillset.data.base import ImageSet
from distillset.evaluate import EvalConfig, evaluate_synthetic
from distillset.evaluate.elf import (
    ELFConfig,
    ELFLoss,
    ELFNetwork,
    choose_eval_split,
    elf_feature_network,
    evaluate_elf,
    feature_distance,
    fit_features,
    resolve_split,
    stage_shapes,
)
from distillset.nets import get_network


def test_ce_feature_distance_is_soft_target_cross_entropy_over_channels():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 3, 2, 2, generator=g)
    f = torch.rand(2, 3, 2, 2, generator=g) * 2  # unnormalised, non-negative, as post-ReLU features
    log_p = h - h.exp().sum(dim=1, keepdim=True).log()
    by_hand = -(f * log_p).sum(dim=1).mean()  # mean over (n, h, w) of -sum_c f log softmax_c
    assert torch.allclose(feature_distance(h, f, "ce"), by_hand, atol=1e-6)


def test_l2_l1_cos_feature_distances_by_hand():
    h = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    f = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    assert feature_distance(h, f, "l2").item() == pytest.approx((1 + 4) / 4)
    assert feature_distance(h, f, "l1").item() == pytest.approx((1 + 2) / 4)
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    assert feature_distance(a, b, "cos").item() == pytest.approx(1.0)  # orthogonal batches
    assert feature_distance(a, 3 * a, "cos").item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="feature shapes differ"):
        feature_distance(a, torch.zeros(2, 3))


def test_config_validation():
    with pytest.raises(ValueError, match="feature_loss"):
        ELFConfig(feature_loss="kl")
    with pytest.raises(ValueError, match="lambda_front"):
        ELFConfig(lambda_front=-1)
    with pytest.raises(ValueError, match="feature_train_size"):
        ELFConfig(feature_train_size=0)


def test_split_choice_matches_the_reference_pairs_at_28px():
    info = dataset_info("fashion-mnist")
    feature_shape = (512, 4, 4)  # width-512 ConvNet-3 at 28 px (padded to 32 as in the DC code)
    resnet18 = stage_shapes(get_network("resnet18", 1, 10, 28, seed=0), info)
    # stem, layer1 x2, layer2 x2, layer3 x2, layer4 x2: ELF cuts after the first block of layer4
    assert choose_eval_split(resnet18, feature_shape) == 7 and resnet18[7] == feature_shape
    resnet_ap10 = stage_shapes(get_network("resnetap10", 1, 10, 28, seed=0), info)
    assert resnet_ap10[4] == (512, 3, 3) and choose_eval_split(resnet_ap10, feature_shape) == 4  # pooled 4x4 -> 3x3
    convnet = stage_shapes(get_network("convnet3", 1, 10, 28, seed=0), info)
    assert choose_eval_split(convnet, feature_shape) == 2  # 128x4x4: same size, channels bridged
    with pytest.raises(ValueError, match="pass eval_split"):
        choose_eval_split([(64, 16, 16), (32, 8, 8)], (512, 4, 4))
    assert resolve_split(-1, 9) == 8
    with pytest.raises(ValueError, match="out of range"):
        resolve_split(9, 9)


def test_fit_features_pools_down_only():
    f = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(fit_features(f, (1, 4, 4)), f)
    assert torch.allclose(fit_features(f, (1, 2, 2)), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    with pytest.raises(ValueError, match="deeper eval_split"):
        fit_features(f, (1, 8, 8))


def test_elf_loss_is_weighted_feature_and_rear_terms():
    torch.manual_seed(0)
    net = get_network("convnet3", 1, 10, 8, seed=0, width=8)
    wrapped = ELFNetwork(net, split=1, front_shape=(8, 2, 2), feature_shape=(4, 2, 2), seed=0)
    x = torch.randn(3, 1, 8, 8)
    features = torch.rand(5, 4, 2, 2)
    train = ImageSet(torch.zeros(5, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4]))
    idx = torch.tensor([4, 0, 2])
    loss = ELFLoss(features, train, ELFConfig(lambda_front=0.5, lambda_rear=2.0))
    logits = wrapped(x)
    front = net.features(x, 1)
    assert torch.allclose(logits, net(x))  # the wrapper does not change the network's function
    by_hand = 0.5 * F.cross_entropy(wrapped.to_feature(front), features[idx]) + 2.0 * F.cross_entropy(
        net.logits_from(wrapped.from_feature(features[idx]), 1), train.labels[idx]
    )
    value = loss(wrapped, x, idx)
    assert torch.allclose(value, by_hand, atol=1e-6)
    value.backward()
    assert wrapped.to_feature.weight.grad is not None and wrapped.from_feature.weight.grad is not None
    with pytest.raises(RuntimeError, match="forward pass in training mode"):
        wrapped.pop_front()  # consumed by the loss


def test_zero_weights_reproduce_the_plain_protocol_and_weights_change_training(digits, small_set):
    config = EvalConfig(model="convnet3", epochs=3, num_models=2, seed=1)
    feature_net = get_network("convnet3", 1, 10, 8, seed=5)  # 128x1x1 = ConvNet-3's own last stage
    plain = evaluate_synthetic(small_set, digits.test, digits.info, config)
    zero = evaluate_elf(small_set, digits, config, ELFConfig(lambda_front=0, lambda_rear=0), feature_net=feature_net)
    assert zero.accuracies == plain.accuracies and zero.per_class == plain.per_class
    elf = evaluate_elf(small_set, digits, config, ELFConfig(feature_loss="l2", lambda_front=50, lambda_rear=5),
                       feature_net=feature_net)
    assert elf.per_class != plain.per_class
    record = elf.config["elf"]
    assert record["eval_split"] == 2 and record["feature_shape"] == [128, 1, 1] == record["front_shape"]


def test_feature_network_is_trained_once_and_cached(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLSET_CACHE", str(tmp_path))
    config = ELFConfig(feature_width=16, feature_epochs=1, feature_train_size=100)
    first = elf_feature_network(digits, config)
    files = list((tmp_path / "feature-nets").glob("*.safetensors"))
    assert len(files) == 1 and "width16" in files[0].name and "-n100-" in files[0].name
    mtime = files[0].stat().st_mtime_ns
    second = elf_feature_network(digits, config)
    assert files[0].stat().st_mtime_ns == mtime
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="multiple of the 10 classes"):
        elf_feature_network(digits, ELFConfig(feature_train_size=15))


def test_cli_evaluate_with_elf_and_fair_metrics(digits, small_set, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLSET_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    save_run(run, small_set, method="random", dataset="digits", ipc=2, seed=0, config={}, wall_seconds=0.0)
    result = CliRunner().invoke(app, [
        "evaluate", str(run), "--model", "convnet3", "--num-models", "1", "--epochs", "1", "--elf",
        "--elf-param", "feature_width=128", "--elf-param", "feature_epochs=1", "--elf-param", "feature_train_size=100",
        "--fair-metrics", "--full-data-accuracy", "95",
    ])
    assert result.exit_code == 0, result.output
    entry = json.loads((run / "evaluation.json").read_text())["convnet3-e1-n1-s0-elf"]
    assert entry["config"]["elf"]["feature_width"] == 128
    fair = entry["fair_metrics"]
    assert fair["full_data_accuracy"] == 95 and fair["hlr"] == [pytest.approx(95 - entry["accuracies"][0])]
    assert math.isfinite(fair["lrs_mean"]) and "LRS" in result.output
    bad = CliRunner().invoke(app, ["evaluate", str(run), "--elf", "--elf-param", "nonsense=1", "--epochs", "0"])
    assert bad.exit_code == 2 and "--elf-param" in bad.output


def test_normalized_targets_keep_the_ce_term_on_the_task_loss_scale():
    g = torch.Generator().manual_seed(0)
    activation = torch.randn(4, 128, 3, 3, generator=g)
    features = 1000.0 * torch.rand(4, 128, 3, 3, generator=g)  # raw post-ReLU maps of a large magnitude
    targets = elf_module.normalized_features(features)
    assert torch.allclose(targets.sum(dim=1), torch.ones(4, 3, 3))
    raw, normalized = feature_distance(activation, features), feature_distance(activation, targets)
    assert raw > 1e4 and normalized < math.log(128) + 2.0  # CE(q, softmax(h)) = H(q) + KL; H(q) <= log C
    loss = ELFLoss(features, ImageSet(torch.zeros(4, 1, 8, 8), torch.arange(4)),
                   ELFConfig(feature_target="normalized", lambda_rear=0))
    assert torch.equal(loss.front_targets, targets)
    with pytest.raises(ValueError, match="feature_target"):
        ELFConfig(feature_target="softmax")


def test_split_choice_for_a_width_128_teacher():
    """A ConvNet-3 teacher of width 128 (128x4x4 at 28 px): ResNet-18 is cut where the reference cuts it (after
    the first block of layer4, 512x4x4, channels bridged); ResNetAP-10 after its last stage (pooled, bridged)."""
    info = dataset_info("fashion-mnist")
    feature_shape = (128, 4, 4)
    for name in ("resnet18", "resnet18-in"):
        assert choose_eval_split(stage_shapes(get_network(name, 1, 10, 28, seed=0), info), feature_shape) == 7
    assert choose_eval_split(stage_shapes(get_network("resnetap10", 1, 10, 28, seed=0), info), feature_shape) == 4
    assert choose_eval_split(stage_shapes(get_network("convnet3", 1, 10, 28, seed=0), info), feature_shape) == 2


def test_teacher_by_path(digits, small_set, tmp_path):
    from distillset.training.teachers import make_recipe, train_teacher

    recipe = make_recipe(digits, "convnet3", epochs=1, dsa=False, precision="fp32", network_options={"width": 16})
    teacher = train_teacher(digits, recipe, root=tmp_path)
    config = ELFConfig(teacher=str(teacher.path))
    net = elf_feature_network(digits, config)
    assert torch.equal(net.state_dict()["classifier.weight"], teacher.net.state_dict()["classifier.weight"])
    result = evaluate_elf(small_set, digits, EvalConfig(epochs=1, num_models=1), config)
    record = result.config["elf"]
    assert record["teacher_sha256"] == teacher.manifest["sha256"] and record["feature_shape"] == [16, 1, 1]
    other = dataset_info("fashion-mnist")
    with pytest.raises(ValueError, match="trained on digits"):
        elf_feature_network(type(digits)(other, digits.train, digits.test), config)


def test_an_interrupted_elf_training_resumes_bit_for_bit_and_other_settings_are_refused(digits, small_set, tmp_path,
                                                                                          monkeypatch):
    from distillset.evaluate import protocol
    from distillset.io import CheckpointMismatchError
    from distillset.training import TrainingCheckpoint

    config = EvalConfig(model="convnet3", epochs=4, num_models=1, batch_size=8, seed=2)
    feature_net = get_network("convnet3", 1, 10, 8, seed=5)
    elf = ELFConfig(feature_loss="l2", lambda_front=5, lambda_rear=1)
    reference = evaluate_elf(small_set, digits, config, elf, feature_net=feature_net)

    class Stop(Exception):
        pass

    def every_epoch(stem, identity):  # a checkpoint after every epoch instead of every 2 minutes
        return TrainingCheckpoint(stem, identity, every_seconds=0)

    real_compiled = protocol.compiled

    def stop_in_epoch_three(net, cfg):  # 20 images, batch 8: 3 steps per epoch; stop at the 9th step
        forward, calls = real_compiled(net, cfg), iter(range(8))

        def stopping(x):
            if next(calls, None) is None:
                raise Stop
            return forward(x)
        return stopping

    monkeypatch.setattr(protocol, "TrainingCheckpoint", every_epoch)
    monkeypatch.setattr(protocol, "compiled", stop_in_epoch_three)
    with pytest.raises(Stop):
        evaluate_elf(small_set, digits, config, elf, feature_net=feature_net, checkpoint_dir=tmp_path)
    assert (tmp_path / "model0.safetensors").is_file()  # the bridges and the network after epochs 0 and 1
    monkeypatch.setattr(protocol, "compiled", real_compiled)
    with pytest.raises(CheckpointMismatchError):  # other ELF settings: not this training's checkpoint
        evaluate_elf(small_set, digits, config, ELFConfig(feature_loss="l2", lambda_front=1, lambda_rear=1),
                     feature_net=feature_net, checkpoint_dir=tmp_path)
    steps = []
    real_loss = ELFLoss.__call__
    monkeypatch.setattr(ELFLoss, "__call__", lambda self, *args: steps.append(1) or real_loss(self, *args))
    resumed = evaluate_elf(small_set, digits, config, elf, feature_net=feature_net, checkpoint_dir=tmp_path)
    assert len(steps) == 3 * 3  # epochs 2-4 of 0-4 only: it continued from the checkpoint after epoch 1
    assert resumed.accuracies == reference.accuracies and resumed.per_class == reference.per_class
