"""Speed of ConvNet-3 (width 128) on 1x28x28 inputs across norm implementations and settings.

Run ``OMP_NUM_THREADS=1 nice -n 10 python benchmarks/nets_speed.py`` (``--no-compile`` skips
torch.compile; ``--mmap-threshold 1073741824`` keeps large tensors on glibc's heap). Prints one
markdown row per setting: best-of-n CPU milliseconds of this process (so other load on the
machine matters less) for a no-grad forward of 256 images and for a training step (forward,
cross-entropy, backward to the weights) on 100 images. docs/networks.md shows its output.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import itertools
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillset.nets import ConvNet, InstanceNorm2d, instance_norm


class NativeGroupNorm(InstanceNorm2d):
    """Always the native group-norm kernel, whatever the layout."""

    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(x, self.num_channels, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


class DecomposedInstanceNorm(InstanceNorm2d):
    """Always the decomposed form :func:`instance_norm`."""

    def forward(self, x: Tensor) -> Tensor:
        return instance_norm(x, self.weight, self.bias, self.eps)


NORM_VARIANTS: dict[str, Callable[[int], nn.Module]] = {
    "nn.GroupNorm": lambda channels: nn.GroupNorm(channels, channels),
    "InstanceNorm2d": InstanceNorm2d,
    "native group_norm": NativeGroupNorm,
    "decomposed": DecomposedInstanceNorm,
}


def build_convnet(norm_variant: str) -> ConvNet:
    net = ConvNet(1, 10, (28, 28))
    for block in net.blocks:
        block.norm = NORM_VARIANTS[norm_variant](block.conv.out_channels)
    return net


def best_ms(step: Callable[[], object], repeats: int) -> float:
    """Best-of-``repeats`` CPU time of this process (user + system), robust to other load on the machine."""
    step()  # warm-up (and compilation)
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        step()
        best = min(best, time.process_time() - start)
    return best * 1e3


def measure(norm_variant: str, bf16: bool, channels_last: bool, compiled: bool, repeats: int) -> tuple[float, float]:
    torch.manual_seed(0)
    net = build_convnet(norm_variant)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    torch._dynamo.reset()  # fresh compile cache: every variant shares StagedNetwork.forward's code object
    model: Callable[[Tensor], Tensor] = torch.compile(net) if compiled else net
    big = torch.randn(256, 1, 28, 28).contiguous(memory_format=memory_format)
    small = torch.randn(100, 1, 28, 28).contiguous(memory_format=memory_format)
    labels = torch.randint(0, 10, (100,))

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def forward() -> None:
        with torch.no_grad(), autocast():
            model(big)

    def train_step() -> None:
        with autocast():
            loss = F.cross_entropy(model(small).float(), labels)
        loss.backward()

    return best_ms(forward, repeats), best_ms(train_step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--norms", nargs="+", default=list(NORM_VARIANTS), choices=list(NORM_VARIANTS))
    parser.add_argument(
        "--mmap-threshold",
        type=int,
        default=0,
        help="glibc M_MMAP_THRESHOLD in bytes (0: leave as is); large values stop the per-op page faults "
        "of tensors above 32 MiB",
    )
    args = parser.parse_args()
    if args.mmap_threshold:
        m_mmap_threshold = -3
        if ctypes.CDLL("libc.so.6").mallopt(m_mmap_threshold, ctypes.c_int(args.mmap_threshold)) != 1:
            raise SystemExit(f"mallopt(M_MMAP_THRESHOLD, {args.mmap_threshold}) was refused")
    threshold = args.mmap_threshold or "default"
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, mmap threshold {threshold}")
    print("| norm | dtype | layout | mode | fwd 256 (ms) | train step 100 (ms) |")
    print("|---|---|---|---|---:|---:|")
    modes = (False,) if args.no_compile else (False, True)
    for compiled, bf16, channels_last, norm in itertools.product(modes, (False, True), (False, True), args.norms):
        fwd, step = measure(norm, bf16, channels_last, compiled, args.repeats)
        row = (
            norm,
            "bf16 autocast" if bf16 else "fp32",
            "channels_last" if channels_last else "contiguous",
            "compile" if compiled else "eager",
        )
        print(f"| {' | '.join(row)} | {fwd:.0f} | {step:.0f} |", flush=True)


if __name__ == "__main__":
    main()
