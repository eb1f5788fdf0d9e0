"""Networks: shapes, reference parameter counts, the fast instance norm, splitting, seeding."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from distillset.nets import (
    ConvNet,
    InstanceNorm2d,
    PatchConv2d,
    StagedNetwork,
    get_network,
    instance_norm,
    network_names,
    unfolded_conv2d,
)
from distillset.registry import UnknownNameError

# (channels, side) inputs each registry entry must handle; ConvNet-6 needs >= 64 px.
INPUTS = [(1, 28), (3, 32), (3, 64)]
CASES = [
    (name, channels, side)
    for name in network_names()
    for channels, side in INPUTS
    if not (name == "convnet6" and side < 64)
]


@pytest.mark.parametrize(("name", "channels", "side"), CASES)
def test_every_network_maps_images_to_logits_and_embeddings(name: str, channels: int, side: int) -> None:
    net = get_network(name, channels, 7, side, seed=0)
    x = torch.randn(2, channels, side, side)
    assert isinstance(net, StagedNetwork)
    assert net(x).shape == (2, 7)
    assert net.embed(x).shape == (2, net.embed_dim)


@pytest.mark.parametrize(("channels", "side"), [(1, 28), (3, 32)])
def test_convnet3_embeds_2048_features_like_the_reference(channels: int, side: int) -> None:
    net = get_network("convnet", channels, 10, side)
    assert net.embed(torch.randn(3, channels, side, side)).shape == (3, 2048)


def test_convnet_pads_only_28px_greyscale_input_by_3() -> None:
    assert get_network("convnet", 1, 10, 28).blocks[0].conv.padding == (3, 3)
    assert get_network("convnet", 1, 10, 32).blocks[0].conv.padding == (1, 1)
    assert get_network("convnet", 3, 10, 32).blocks[0].conv.padding == (1, 1)


def test_embedding_sizes_follow_depth_and_resolution() -> None:
    assert get_network("convnet", 3, 10, 64).embed_dim == 128 * 8 * 8
    assert get_network("convnet4", 3, 10, 64).embed_dim == 128 * 4 * 4
    assert get_network("convnet6", 3, 10, 128).embed_dim == 128 * 2 * 2
    assert get_network("resnet18", 3, 10, 32).embed_dim == 512
    assert get_network("resnetap10", 3, 10, 32).embed_dim == 512
    assert get_network("mlp", 1, 10, 28).embed_dim == 128


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_parameter_counts_match_the_reference_architectures() -> None:
    # ConvNet-3 on CIFAR: 3 convs (3->128, 128->128 x2, 3x3, biased), 3 norms (weight+bias), linear 2048->10.
    convs = (3 * 9 + 1) * 128 + 2 * (128 * 9 + 1) * 128
    assert parameter_count(get_network("convnet", 3, 10, 32)) == convs + 3 * 2 * 128 + 2048 * 10 + 10 == 320_010
    # ResNet-18 for CIFAR (kuangliu/pytorch-cifar, DC ``ResNet18BN``): 11,173,962 parameters.
    assert parameter_count(get_network("resnet18", 3, 10, 32)) == 11_173_962
    # DC MLP on 28x28 grey: 784*128+128 + 128*128+128 + 128*10+10.
    assert parameter_count(get_network("mlp", 1, 10, 28)) == 784 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10


def test_norm_options_pick_the_right_layers() -> None:
    assert isinstance(get_network("convnet", 3, 10, 32).blocks[0].norm, InstanceNorm2d)
    assert isinstance(get_network("convnet3-bn", 3, 10, 32).blocks[0].norm, nn.BatchNorm2d)
    assert isinstance(get_network("resnet18", 3, 10, 32).stem.norm, nn.BatchNorm2d)
    assert isinstance(get_network("resnet18-in", 3, 10, 32).stem.norm, InstanceNorm2d)
    assert isinstance(get_network("resnetap10", 3, 10, 32).stem.norm, InstanceNorm2d)
    layernorm = get_network("convnet", 1, 10, 28, norm="layernorm").blocks[0].norm
    assert isinstance(layernorm, nn.LayerNorm) and layernorm.normalized_shape == (128, 32, 32)
    plain = get_network("convnet", 3, 10, 32, norm="none", pooling="maxpool", activation="swish")
    assert [type(m) for m in plain.blocks[0]] == [nn.Conv2d, nn.SiLU, nn.MaxPool2d]
    assert get_network("convnet", 3, 10, 32, pooling="none").embed_dim == 128 * 32 * 32


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"norm": "bogus"}, "unknown norm 'bogus'; choose one of: instancenorm, batchnorm"),
        ({"pooling": "x"}, "unknown pooling 'x'; choose one of: avgpool"),
        ({"activation": "x"}, "unknown activation 'x'; choose one of: relu"),
    ],
)
def test_bad_convnet_options_name_the_choices(options: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_network("convnet", 3, 10, 32, **options)


def test_too_deep_convnet_for_the_image_is_rejected() -> None:
    with pytest.raises(ValueError, match="smaller depth"):
        get_network("convnet6", 3, 10, 32)


def test_unknown_network_lists_the_registered_names() -> None:
    with pytest.raises(UnknownNameError, match="convnet3-bn.*resnetap10"):
        get_network("vgg11", 3, 10, 32)


def test_resnet_ap_downsamples_by_average_pooling_with_idc_init() -> None:
    net = get_network("resnetap10", 3, 10, 32, seed=0)
    assert all(m.stride == (1, 1) for m in net.modules() if isinstance(m, nn.Conv2d))
    assert [len(net.layer1), len(net.layer2), len(net.layer3), len(net.layer4)] == [1, 1, 1, 1]
    assert isinstance(net.layer2[0].pool, nn.AvgPool2d)
    # IDC: conv weights ~ N(0, 2 / (k * k * C_out)); layer4 conv2 has 2.4M weights.
    weight = net.layer4[0].conv2.weight
    assert weight.std().item() == pytest.approx((2 / (9 * 512)) ** 0.5, rel=0.01)
    assert net.features(torch.randn(2, 3, 32, 32), 4).shape == (2, 512, 4, 4)


def test_resnet18_uses_strided_convs_and_imagenet_stem_above_64px() -> None:
    small = get_network("resnet18", 3, 10, 32)
    assert small.layer2[0].conv1.stride == (2, 2) and small.stem.conv.kernel_size == (3, 3)
    large = get_network("resnet18", 3, 10, 128)
    assert large.stem.conv.kernel_size == (7, 7) and isinstance(large.stem.pool, nn.MaxPool2d)
    assert large.features(torch.randn(1, 3, 128, 128), 0).shape == (1, 64, 32, 32)


@pytest.mark.parametrize("name", ["convnet", "resnet18-in", "resnetap10", "mlp"])
def test_split_at_every_stage_reproduces_the_forward_pass(name: str) -> None:
    net = get_network(name, 3, 10, 32, seed=0).eval()
    x = torch.randn(2, 3, 32, 32)
    logits = net(x)
    for upto in range(-len(net.stages), len(net.stages)):
        torch.testing.assert_close(net.logits_from(net.features(x, upto), upto), logits)
    with pytest.raises(IndexError, match="stages"):
        net.features(x, len(net.stages))


def test_elf_split_shapes() -> None:
    x = torch.randn(2, 3, 32, 32)
    # ELF ConvNet_L3: all three blocks -> 128x4x4; ResNet18_Layered: up to layer4's first block -> 512x4x4.
    assert get_network("convnet", 3, 10, 32).features(x, 2).shape == (2, 128, 4, 4)
    assert get_network("resnet18-in", 3, 10, 32).features(x, 7).shape == (2, 512, 4, 4)


def test_state_dict_keys_are_stable() -> None:
    keys = list(get_network("convnet", 3, 10, 32).state_dict())
    assert keys[:4] == ["blocks.0.conv.weight", "blocks.0.conv.bias", "blocks.0.norm.weight", "blocks.0.norm.bias"]
    assert keys[-2:] == ["classifier.weight", "classifier.bias"] and len(keys) == 3 * 4 + 2
    resnet_keys = set(get_network("resnet18", 3, 10, 32).state_dict())
    assert {"stem.conv.weight", "layer2.0.shortcut.conv.weight", "layer4.1.norm2.running_mean"} <= resnet_keys
    assert set(get_network("mlp", 1, 10, 28).state_dict()) == {
        "hidden.0.linear.weight", "hidden.0.linear.bias", "hidden.1.linear.weight", "hidden.1.linear.bias",
        "classifier.weight", "classifier.bias",
    }  # fmt: skip


def test_seeded_construction_is_reproducible_and_leaves_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    first = get_network("convnet", 3, 10, 32, seed=5).state_dict()
    second = get_network("convnet", 3, 10, 32, seed=5).state_dict()
    other = get_network("convnet", 3, 10, 32, seed=6).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["blocks.0.conv.weight"], other["blocks.0.conv.weight"])


def test_options_reach_the_constructor() -> None:
    net = get_network("convnet", 3, 10, (32, 32), width=512, seed=0)
    assert isinstance(net, ConvNet) and net.features(torch.randn(1, 3, 32, 32), 2).shape == (1, 512, 4, 4)


# --- instance norm ---------------------------------------------------------------------------


def _random_group_norm(channels: int) -> nn.GroupNorm:
    reference = nn.GroupNorm(channels, channels, eps=1e-5)
    with torch.no_grad():
        reference.weight.normal_()
        reference.bias.normal_()
    return reference


def _forward_backward(norm: nn.Module, x: Tensor, grad_out: Tensor) -> tuple[Tensor, ...]:
    """Output and gradients (input, weight, bias) of ``norm`` at ``x``, in float64 for comparison."""
    norm.zero_grad()
    x = x.clone().requires_grad_()
    y = norm(x)
    y.backward(grad_out.to(y.dtype))
    return tuple(t.double() for t in (y, x.grad, norm.weight.grad, norm.bias.grad))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_instance_norm_equals_group_norm_forward_and_backward(layout: torch.memory_format) -> None:
    torch.manual_seed(0)
    reference = _random_group_norm(16)
    fast = InstanceNorm2d(16)
    fast.load_state_dict(reference.state_dict())
    # Offset channels so |mean| >> std: a one-pass E[x^2] - E[x]^2 variance fails here (nn.GroupNorm's own
    # channels_last CPU kernel is off by ~3e-3), so the reference is GroupNorm on contiguous input.
    x = torch.randn(4, 16, 7, 9) * 0.5 + torch.linspace(-30, 30, 16).view(1, -1, 1, 1)
    grad_out = torch.randn(4, 16, 7, 9)
    exact = _forward_backward(reference.double(), x.double(), grad_out)
    group_norm = _forward_backward(reference.float(), x, grad_out)
    ours = _forward_backward(fast, x.to(memory_format=layout), grad_out)
    torch.testing.assert_close(ours[0], group_norm[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours[0], exact[0], atol=1e-5, rtol=0)
    for name, mine, theirs, truth in zip(("output", "input", "weight", "bias"), ours, group_norm, exact):
        assert (mine - truth).abs().max() <= 2 * (theirs - truth).abs().max() + 1e-6, f"{name} grad less accurate"


def test_decomposed_instance_norm_matches_the_definition() -> None:
    torch.manual_seed(1)
    x = torch.randn(3, 5, 6, 4) * 3 + 7
    weight, bias = torch.randn(5), torch.randn(5)
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-5) * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)
    torch.testing.assert_close(instance_norm(x, weight, bias, 1e-5), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_instance_norm_under_bf16_autocast_keeps_fp32_accuracy(layout: torch.memory_format) -> None:
    torch.manual_seed(2)
    reference = _random_group_norm(8)
    fast = InstanceNorm2d(8)
    fast.load_state_dict(reference.state_dict())
    x = (torch.randn(2, 8, 16, 16) + 50).to(torch.bfloat16).to(memory_format=layout)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fast(x)
    assert y.dtype == torch.bfloat16
    expected = reference(x.float())
    # Only the final rounding to bf16 (8 bits of mantissa) may differ.
    torch.testing.assert_close(y.float(), expected, atol=0.02 * expected.abs().max().item(), rtol=0)


def test_instance_norm_rejects_wrong_channel_count() -> None:
    with pytest.raises(ValueError, match=r"expects \(N, 4, H, W\)"):
        InstanceNorm2d(4)(torch.randn(1, 3, 2, 2))


def test_traced_instance_norm_takes_the_decomposed_path_and_stays_exact() -> None:
    torch.manual_seed(3)
    reference = _random_group_norm(6)
    fast = InstanceNorm2d(6)
    fast.load_state_dict(reference.state_dict())
    graphs: list[torch.fx.GraphModule] = []

    def record(graph: torch.fx.GraphModule, example_inputs: list[Tensor]) -> torch.fx.GraphModule:
        graphs.append(graph)
        return graph

    x = torch.randn(2, 6, 5, 5) * 2 + 3
    torch._dynamo.reset()
    out = torch.compile(fast, backend=record, fullgraph=True)(x)
    torch.testing.assert_close(out, reference(x), atol=1e-5, rtol=0)
    # the custom autograd function's forward is traced into a subgraph of the captured graph
    called = {str(node.target) for module in graphs[0].modules() if isinstance(module, torch.fx.GraphModule)
              for node in module.graph.nodes}
    assert not any("group_norm" in target for target in called) and any("rsqrt" in target for target in called)


@pytest.mark.parametrize("name", ["convnet", "convnet3-bn", "resnet18", "resnetap10", "mlp"])
def test_reset_parameters_under_the_same_seed_rebuilds_the_seeded_network(name: str) -> None:
    expected = get_network(name, 3, 10, 32, seed=11).state_dict()
    net = get_network(name, 3, 10, 32, seed=12)
    net(torch.randn(4, 3, 32, 32))  # moves BatchNorm running statistics
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(11)
        net.reset_parameters()
    assert all(torch.equal(value, expected[key]) for key, value in net.state_dict().items())


@pytest.mark.parametrize(("channels", "kernel", "stride", "padding", "bias"),
                         [(1, 3, 1, 3, True), (3, 3, 1, 1, True), (3, 7, 2, 3, False), (2, 3, 2, 0, True)])
def test_patch_conv_equals_conv2d_forward_and_backward(channels: int, kernel: int, stride: int, padding: int,
                                                       bias: bool) -> None:
    torch.manual_seed(4)
    reference = nn.Conv2d(channels, 8, kernel, stride=stride, padding=padding, bias=bias).double()
    patch = PatchConv2d(channels, 8, kernel, stride=stride, padding=padding, bias=bias).double()
    patch.load_state_dict(reference.state_dict())
    x = torch.randn(3, channels, 13, 11, dtype=torch.float64)
    outputs, grads = [], []

    def unfolded(xi: Tensor) -> Tensor:
        return unfolded_conv2d(xi, patch.weight, patch.bias, patch.stride, patch.padding)

    for conv, forward in ((reference, reference), (patch, unfolded)):
        conv.zero_grad()
        xi = x.clone().requires_grad_()
        y = forward(xi)
        y.backward(torch.ones_like(y) * torch.linspace(-1, 1, y.shape[-1], dtype=torch.float64))
        outputs.append(y)
        grads.append([xi.grad, conv.weight.grad] + ([conv.bias.grad] if bias else []))
    assert outputs[0].shape == outputs[1].shape
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-12, rtol=0)
    for ours, theirs in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)


def test_patch_conv_follows_bf16_autocast_and_names_a_wrong_input() -> None:
    torch.manual_seed(5)
    conv = PatchConv2d(1, 4, 3, padding=1)
    x = torch.randn(2, 1, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = unfolded_conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), nn.functional.conv2d(x, conv.weight, conv.bias, padding=1),
                               atol=0.05, rtol=0.02)
    with pytest.raises(ValueError, match=r"expects \(N, 1, H, W\)"):
        conv(torch.randn(2, 3, 8, 8))


def test_convnet_runs_a_greyscale_first_conv_as_patch_conv() -> None:
    grey, colour = get_network("convnet3", 1, 10, (28, 28)), ConvNet(3, 10, (32, 32))
    assert type(grey.blocks[0].conv) is PatchConv2d and type(colour.blocks[0].conv) is nn.Conv2d
    assert type(grey.blocks[1].conv) is nn.Conv2d
    graphs: list[torch.fx.GraphModule] = []

    def record(graph: torch.fx.GraphModule, example_inputs: list[Tensor]) -> torch.fx.GraphModule:
        graphs.append(graph)
        return graph

    x = torch.randn(2, 1, 28, 28)
    torch._dynamo.reset()
    out = torch.compile(grey.embed, backend=record, fullgraph=True)(x)
    torch.testing.assert_close(out, grey.embed(x), atol=1e-4, rtol=1e-4)
    assert any("unfold" in str(node.target) for node in graphs[0].graph.nodes)


def test_instance_norm_hand_written_backward_passes_gradcheck() -> None:
    torch.manual_seed(4)
    x = (torch.randn(2, 3, 4, 5, dtype=torch.float64) * 3 + 2).requires_grad_()
    weight = torch.randn(3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *args: instance_norm(*args, 1e-5), (x, weight, bias))
    # only the gradients asked for are computed
    (grad_x,) = torch.autograd.grad(instance_norm(x, weight.detach(), bias.detach(), 1e-5).square().sum(), x)
    assert grad_x.shape == x.shape and torch.isfinite(grad_x).all()
