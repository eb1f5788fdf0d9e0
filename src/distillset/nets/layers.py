"""Building blocks shared by the networks: the fast instance norm and name -> layer factories."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORMS = ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")
ACTIVATIONS = ("relu", "leakyrelu", "sigmoid", "swish")
POOLINGS = ("avgpool", "maxpool", "none")


class InstanceNorm2d(nn.Module):
    """Instance norm with a per-channel affine: exactly ``nn.GroupNorm(C, C, affine=True)``.

    This is the "instance norm" of the DC/DM ConvNet (dm_protocol.md section 3):
    ``y = (x - mean_hw) / sqrt(var_hw + eps) * weight + bias`` with the biased variance
    over (H, W) of each sample and channel. Parameters are named ``weight`` and ``bias``,
    so state dicts load into and from ``nn.GroupNorm``.

    Speed (docs/networks.md): contiguous eager inputs use the native group-norm kernel,
    the fastest exact eager path on CPU. channels_last inputs (where that kernel is slow in
    bf16 and uses a one-pass variance that loses ~3e-3 when |mean| >> std) and traced graphs
    (``torch.compile``) use the decomposed form :func:`instance_norm`, which Inductor fuses
    with the following ReLU/pooling. Statistics are fp32 also under bf16 autocast.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(num_channels))
        self.bias = nn.Parameter(torch.empty(num_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GroupNorm's initialisation: weight 1, bias 0."""
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.num_channels:
            raise ValueError(
                f"InstanceNorm2d({self.num_channels}) expects (N, {self.num_channels}, H, W), "
                f"got shape {tuple(x.shape)}"
            )
        if torch.compiler.is_compiling() or x.is_contiguous(memory_format=torch.channels_last):
            return instance_norm(x, self.weight, self.bias, self.eps)
        return F.group_norm(x, self.num_channels, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}"


def instance_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """Decomposed instance norm, computed in fp32 (fp64 for fp64 input) and returned in ``x.dtype``.

    Two-pass: the centred input gives both the variance and the output, so neither the
    statistics nor the weight gradient suffer cancellation when |mean| >> std. The backward is
    written out (:class:`_InstanceNormFunction`): traced by ``torch.compile`` it reads the input and
    the output gradient in two fused passes and saves only the input and the per-channel statistics,
    which makes a compiled bf16 training step of ConvNet-3 ~20% faster than Inductor's own derivative
    of the decomposed forward (docs/networks.md).
    """
    return _InstanceNormFunction.apply(x, weight, bias, eps)


class _InstanceNormFunction(torch.autograd.Function):
    """y = (x - mean) * rstd * weight + bias over (H, W); the standard normalisation gradient
    dx = rstd * (g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat)), with g_hat = g * weight."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        wide = x.to(torch.promote_types(x.dtype, torch.float32))
        mean = wide.mean(dim=(2, 3), keepdim=True)
        centred = wide - mean
        rstd = torch.rsqrt(centred.square().mean(dim=(2, 3), keepdim=True) + eps)
        ctx.save_for_backward(x, mean, rstd, weight)
        scale = weight.to(wide.dtype).view(1, -1, 1, 1) * rstd
        return torch.addcmul(bias.to(wide.dtype).view(1, -1, 1, 1), centred, scale).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, mean, rstd, weight = ctx.saved_tensors
        normalized = (x.to(rstd.dtype) - mean) * rstd
        grad = grad_output.to(rstd.dtype)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_normalized = grad * weight.to(rstd.dtype).view(1, -1, 1, 1)
            grad_x = rstd * (grad_normalized - grad_normalized.mean(dim=(2, 3), keepdim=True)
                             - normalized * (grad_normalized * normalized).mean(dim=(2, 3), keepdim=True))
            grad_x = grad_x.to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = (grad * normalized).sum(dim=(0, 2, 3)).to(weight.dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum(dim=(0, 2, 3)).to(weight.dtype)
        return grad_x, grad_weight, grad_bias, None


def unfolded_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int],
                    padding: tuple[int, int]) -> Tensor:
    """``F.conv2d`` (groups 1, zero padding, dilation 1) as one matrix product over unfolded patches (im2col)."""
    (kh, kw), (sh, sw), (ph, pw) = weight.shape[2:], stride, padding
    out_h, out_w = (x.shape[2] + 2 * ph - kh) // sh + 1, (x.shape[3] + 2 * pw - kw) // sw + 1
    columns = F.unfold(x, (kh, kw), padding=padding, stride=stride)  # (N, C*kh*kw, L)
    out = torch.matmul(weight.flatten(1).to(columns.dtype), columns)  # (N, out_channels, L)
    if bias is not None:
        out = out + bias.to(out.dtype)[:, None]
    return out.view(x.shape[0], weight.shape[0], out_h, out_w)


class PatchConv2d(nn.Conv2d):
    """``nn.Conv2d`` that, under ``torch.compile``, runs as :func:`unfolded_conv2d`.

    Same parameters, state-dict keys, initialisation and result (up to summation order) as
    ``nn.Conv2d``; ConvNet uses it for a greyscale first layer, where oneDNN's direct convolution
    is memory-bound and slow on CPU. Compiled, the unfolded form makes ConvNet-3's bf16
    real-feature pass on Fashion-MNIST ~20% and its training step ~25% faster (docs/networks.md);
    in eager mode it is not faster, so eager calls use the ordinary convolution.
    Supports ``groups=1``, zero padding and dilation 1 only.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 padding: int = 0, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects (N, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        if not torch.compiler.is_compiling():
            return super().forward(x)
        return unfolded_conv2d(x, self.weight, self.bias, self.stride, self.padding)


def make_norm(kind: str, channels: int, spatial: tuple[int, int]) -> nn.Module | None:
    """Normalisation layer by name, as in the DC ``ConvNet`` (``None`` for ``'none'``).

    ``spatial`` is the (H, W) of the activation, needed only by ``'layernorm'``, which
    normalises over (C, H, W) with an elementwise affine.
    """
    if kind == "instancenorm":
        return InstanceNorm2d(channels)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    if kind == "layernorm":
        return nn.LayerNorm([channels, *spatial])
    if kind == "groupnorm":
        return nn.GroupNorm(4, channels)
    if kind == "none":
        return None
    raise ValueError(f"unknown norm '{kind}'; choose one of: {', '.join(NORMS)}")


def make_activation(kind: str) -> nn.Module:
    """Activation by name (``'swish'`` is x * sigmoid(x) = SiLU)."""
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "leakyrelu":
        return nn.LeakyReLU(negative_slope=0.01)
    if kind == "sigmoid":
        return nn.Sigmoid()
    if kind == "swish":
        return nn.SiLU()
    raise ValueError(f"unknown activation '{kind}'; choose one of: {', '.join(ACTIVATIONS)}")


def make_pooling(kind: str) -> nn.Module | None:
    """2x2 stride-2 pooling by name (``None`` for ``'none'``)."""
    if kind == "avgpool":
        return nn.AvgPool2d(kernel_size=2, stride=2)
    if kind == "maxpool":
        return nn.MaxPool2d(kernel_size=2, stride=2)
    if kind == "none":
        return None
    raise ValueError(f"unknown pooling '{kind}'; choose one of: {', '.join(POOLINGS)}")
