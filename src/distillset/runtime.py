"""Process-level performance settings applied by the command line and the benchmarks."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util

import torch

_M_MMAP_THRESHOLD = -3
_applied = False


def keep_large_allocations() -> bool:
    """Raise glibc's mmap threshold to 1 GiB so large tensors are reused instead of being returned to the
    OS and page-faulted in again after every op (10-30% faster ConvNet passes on CPU, docs/networks.md).
    Same effect as ``MALLOC_MMAP_THRESHOLD_=1073741824``. A no-op off glibc; returns whether it applied."""
    global _applied
    if _applied:
        return True
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        _applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False
    return _applied


def precision_autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for ``precision="bf16"``, else a no-op context (fp32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
