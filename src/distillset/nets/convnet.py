"""ConvNet-D/W of DC/DSA/DM (dm_protocol.md section 3)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from distillset.nets.base import StagedNetwork
from distillset.nets.layers import PatchConv2d, make_activation, make_norm, make_pooling

# First convs with at most this many input channels run as PatchConv2d. Measured (docs/networks.md): a gain
# for greyscale input; for RGB the compiled unfold backward to the input (synthetic images) is ~2x slower.
PATCH_CONV_MAX_CHANNELS = 1


class ConvNet(StagedNetwork):
    """``depth`` x [conv 3x3 -> norm -> activation -> pool 2x2] -> flatten -> linear.

    As in the reference ``networks.ConvNet``: conv and linear keep their bias, PyTorch
    default initialisation, and a 28x28 single-channel input gets padding 3 in the first
    conv so it is processed as 32x32 (2048 features at depth 3, width 128).
    State-dict keys: ``blocks.{i}.conv|norm.*`` and ``classifier.*``.
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: tuple[int, int],
        *,
        depth: int = 3,
        width: int = 128,
        norm: str = "instancenorm",
        activation: str = "relu",
        pooling: str = "avgpool",
    ) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"ConvNet needs depth >= 1 and width >= 1, got depth={depth}, width={width}")
        height, width_px = image_size
        blocks: list[nn.Sequential] = []
        in_channels = channels
        for index in range(depth):
            padding = 3 if index == 0 and channels == 1 and (height, width_px) == (28, 28) else 1
            height, width_px = height + 2 * padding - 2, width_px + 2 * padding - 2
            conv_type = PatchConv2d if in_channels <= PATCH_CONV_MAX_CHANNELS else nn.Conv2d
            layers: OrderedDict[str, nn.Module] = OrderedDict(
                conv=conv_type(in_channels, width, kernel_size=3, padding=padding)
            )
            norm_layer = make_norm(norm, width, (height, width_px))
            if norm_layer is not None:
                layers["norm"] = norm_layer
            layers["act"] = make_activation(activation)
            pool_layer = make_pooling(pooling)
            if pool_layer is not None:
                layers["pool"] = pool_layer
                height, width_px = height // 2, width_px // 2
            if height < 1 or width_px < 1:
                raise ValueError(
                    f"ConvNet depth {depth} pools a {image_size[0]}x{image_size[1]} input down to nothing "
                    f"at block {index}; use a smaller depth or a larger image"
                )
            blocks.append(nn.Sequential(layers))
            in_channels = width
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Linear(width * height * width_px, num_classes)

    @property
    def stages(self) -> Sequence[nn.Module]:
        return self.blocks
