"""ResNet-18 (DC/MTT ``networks.ResNet``) and ResNetAP-10 (IDC ``models/resnet_ap.py``)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from distillset.nets.base import StagedNetwork
from distillset.nets.layers import make_norm

# Largest side that gets the CIFAR-style stem (3x3 conv, stride 1, no pooling).
SMALL_INPUT_MAX_SIDE = 64


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "layernorm":
        raise ValueError("ResNets support norm 'batchnorm', 'instancenorm', 'groupnorm' or 'none', not 'layernorm'")
    return make_norm(kind, channels, (0, 0)) or nn.Identity()


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int, norm: str) -> nn.Conv2d:
    """Convolution with 'same' padding; biased only when no norm follows (IDC ``conv_stride1``)."""
    return nn.Conv2d(
        in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=norm == "none"
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection.

    ``avgpool_downsample=False``: torchvision/DC style, the first conv and the 1x1 shortcut
    conv are strided. ``True``: ResNet-AP style, convs keep stride 1 and a 2x2 average pool
    follows the first conv's activation and the shortcut's 1x1 conv.
    """

    def __init__(self, in_channels: int, channels: int, stride: int, norm: str, avgpool_downsample: bool) -> None:
        super().__init__()
        conv_stride = 1 if avgpool_downsample else stride
        self.conv1 = _conv(in_channels, channels, 3, conv_stride, norm)
        self.norm1 = _norm(norm, channels)
        self.pool = nn.AvgPool2d(stride) if avgpool_downsample and stride > 1 else nn.Identity()
        self.conv2 = _conv(channels, channels, 3, 1, norm)
        self.norm2 = _norm(norm, channels)
        if stride == 1 and in_channels == channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            shortcut = OrderedDict(conv=_conv(in_channels, channels, 1, conv_stride, norm))
            if avgpool_downsample:
                shortcut["pool"] = nn.AvgPool2d(stride)
            shortcut["norm"] = _norm(norm, channels)
            self.shortcut = nn.Sequential(shortcut)

    def forward(self, x: Tensor) -> Tensor:
        out = self.pool(F.relu(self.norm1(self.conv1(x))))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(StagedNetwork):
    """Stem -> 4 stages of BasicBlocks (widths w, 2w, 4w, 8w) -> global average pool -> linear.

    ``fan_out_conv_init``: IDC's conv init (ResNetAP) on top of PyTorch's default.
    Stages for :meth:`features` are the stem followed by every block in order, so ELF's
    ResNet-18 split "stem + layer1..3 + first block of layer4" is ``features(x, 7)``.
    State-dict keys: ``stem.*``, ``layer{1..4}.{j}.*``, ``classifier.*``.
    """

    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(
        self,
        stem: nn.Module,
        num_blocks: Sequence[int],
        num_classes: int,
        *,
        width: int,
        norm: str,
        avgpool_downsample: bool,
        fan_out_conv_init: bool = False,
    ) -> None:
        super().__init__()
        self.fan_out_conv_init = fan_out_conv_init
        if len(num_blocks) != 4:
            raise ValueError(f"ResNet needs 4 stage sizes, got {list(num_blocks)}")
        self.stem = stem
        in_channels = width
        for index, count in enumerate(num_blocks):
            channels = width * 2**index
            blocks = [
                BasicBlock(
                    in_channels if j == 0 else channels,
                    channels,
                    stride=2 if index > 0 and j == 0 else 1,
                    norm=norm,
                    avgpool_downsample=avgpool_downsample,
                )
                for j in range(count)
            ]
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
            in_channels = channels
        self.classifier = nn.Linear(in_channels, num_classes)
        if fan_out_conv_init:
            self._init_convs_fan_out()

    def _init_convs_fan_out(self) -> None:
        """IDC's init: conv weights ~ N(0, 2 / (k * k * C_out)), applied after the default one."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.fan_out_conv_init:
            self._init_convs_fan_out()

    @property
    def stages(self) -> Sequence[nn.Module]:
        return [self.stem, *self.layer1, *self.layer2, *self.layer3, *self.layer4]

    def pool(self, h: Tensor) -> Tensor:
        return h.mean(dim=(2, 3))


def _stem(
    channels: int, width: int, norm: str, kernel_size: int, stride: int, pool: nn.Module | None
) -> nn.Sequential:
    layers = OrderedDict(
        conv=_conv(channels, width, kernel_size, stride, norm), norm=_norm(norm, width), act=nn.ReLU(inplace=True)
    )
    if pool is not None:
        layers["pool"] = pool
    return nn.Sequential(layers)


def resnet18(
    channels: int, num_classes: int, image_size: tuple[int, int], *, norm: str = "batchnorm", width: int = 64
) -> ResNet:
    """ResNet-18, [2, 2, 2, 2] BasicBlocks with strided downsampling, PyTorch default init.

    Inputs up to 64 px get the CIFAR stem of DC's ``ResNet`` (3x3 conv, stride 1); larger
    ones the ImageNet stem (7x7 conv stride 2, 3x3 max pool stride 2). The head is a global
    average pool (DC's ``avg_pool2d(out, 4)`` is the same at 28 and 32 px).
    """
    if max(image_size) <= SMALL_INPUT_MAX_SIDE:
        stem = _stem(channels, width, norm, kernel_size=3, stride=1, pool=None)
    else:
        stem = _stem(channels, width, norm, 7, 2, nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    return ResNet(stem, (2, 2, 2, 2), num_classes, width=width, norm=norm, avgpool_downsample=False)


def resnet_ap10(
    channels: int, num_classes: int, image_size: tuple[int, int], *, norm: str = "instancenorm", width: int = 64
) -> ResNet:
    """ResNetAP-10 of IDC: [1, 1, 1, 1] BasicBlocks, downsampling by 2x2 average pooling.

    Stem by input side as in IDC: <= 64 px 3x3 conv; <= 128 px 3x3 conv + avg pool 2;
    larger 7x7 conv (stride 1) + avg pool 4. IDC's init: convs ~ N(0, 2 / (k^2 * C_out)),
    norm weights 1 and biases 0.
    """
    side = max(image_size)
    if side <= SMALL_INPUT_MAX_SIDE:
        stem = _stem(channels, width, norm, kernel_size=3, stride=1, pool=None)
    elif side <= 2 * SMALL_INPUT_MAX_SIDE:
        stem = _stem(channels, width, norm, kernel_size=3, stride=1, pool=nn.AvgPool2d(2))
    else:
        stem = _stem(channels, width, norm, kernel_size=7, stride=1, pool=nn.AvgPool2d(4))
    return ResNet(
        stem, (1, 1, 1, 1), num_classes, width=width, norm=norm, avgpool_downsample=True, fan_out_conv_init=True
    )
