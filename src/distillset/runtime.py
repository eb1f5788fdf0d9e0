"""Process-level performance settings: the allocator, the thread count, bf16 autocast where the hardware has
native bf16, and ``torch.compile`` with an eager fallback.

The defaults are the fastest settings that are correct on the machine (docs/methods.md, README "Hardware
notes"): ``precision="auto"`` is bf16 autocast on a CUDA GPU with bf16 or a CPU with AMX / AVX-512 BF16 and
fp32 elsewhere; compilation is on and falls back to eager, with one warning, where ``torch.compile`` fails
(e.g. no C++ compiler). Parameters and synthetic images always stay fp32: autocast only changes the dtype of
the passes run under it. ``DISTILLSET_PRECISION`` (auto, fp32, bf16) and ``DISTILLSET_COMPILE`` (1 or 0)
change these defaults for a whole process (the test suite runs fp32 and eager).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

PRECISIONS = ("auto", "fp32", "bf16")
PRECISION_ENV = "DISTILLSET_PRECISION"
COMPILE_ENV = "DISTILLSET_COMPILE"
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of native bf16 dot products

_M_MMAP_THRESHOLD = -3
_applied = False
_compile_failure: str | None = None  # why torch.compile failed in this process, once it has


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


# ----------------------------------------------------------------------------- threads


def available_cores() -> int:
    """CPU cores this process may use: its affinity mask, capped by a cgroup v2 CPU quota (containers)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def configure_threads() -> int:
    """Use one intra-op thread per available core unless ``OMP_NUM_THREADS`` says otherwise; returns the count."""
    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(available_cores())
    return torch.get_num_threads()


def apply_process_settings() -> None:
    """What the command line applies at start-up: the allocator setting and the thread count."""
    keep_large_allocations()
    configure_threads()


# ----------------------------------------------------------------------------- precision


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 dot products natively (AMX or AVX-512 BF16); without them bf16 is
    emulated and slower than fp32."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if any(probe is not None for probe in probes):
        return any(probe() for probe in probes if probe is not None)
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def bf16_is_fast(device: torch.device | str) -> bool:
    """bf16 autocast pays off on ``device``: a CUDA GPU with bf16 support or a CPU with native bf16."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


def check_precision(precision: str) -> str:
    """``precision`` if it is one of auto, fp32, bf16; else a ValueError naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision that runs: fp32 or bf16 as asked, and for ``auto`` the ``DISTILLSET_PRECISION`` setting
    or else bf16 where :func:`bf16_is_fast` and fp32 elsewhere."""
    if check_precision(precision) != "auto":
        return precision
    chosen = os.environ.get(PRECISION_ENV, "auto").strip().lower() or "auto"
    if check_precision(chosen) != "auto":
        return chosen
    return "bf16" if bf16_is_fast(device) else "fp32"


def precision_autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` where ``precision`` resolves to bf16 (:func:`resolve_precision`), else a
    no-op context (fp32)."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------- compilation


def default_compile() -> bool:
    """The compile default: on, unless ``DISTILLSET_COMPILE`` is 0 / false / no / off."""
    return os.environ.get(COMPILE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def compile_failure() -> str | None:
    """Why ``torch.compile`` failed in this process (it then runs everything eagerly), or None."""
    return _compile_failure


class CompiledOrEager:
    """``torch.compile(fn, dynamic=False)`` that runs ``fn`` eagerly where compilation fails.

    A call whose compiled version raises is repeated eagerly; if that succeeds the failure was the compiler's
    (missing C++ compiler, unsupported Python, backend bug), so one warning is given and this and every later
    compilation of the process run eagerly. If the eager call raises too, that error propagates unchanged.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.eager = fn
        self.compiled = torch.compile(fn, dynamic=False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _compile_failure is not None:
            return self.eager(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any compiler failure; the eager retry tells them apart
            result = self.eager(*args, **kwargs)
            _note_compile_failure(exc)
            return result


def _note_compile_failure(exc: Exception) -> None:
    global _compile_failure
    if _compile_failure is None:
        _compile_failure = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        warnings.warn(
            f"torch.compile failed ({_compile_failure}); running eagerly from here on (slower, same results). "
            "Pass --no-compile (compile=False) to skip the attempt.",
            RuntimeWarning, stacklevel=3,
        )


def compile_or_eager(fn: Callable[..., Any], enabled: bool = True) -> Callable[..., Any]:
    """``fn`` compiled with an eager fallback (:class:`CompiledOrEager`) when ``enabled`` and compilation has
    not failed in this process; else ``fn`` itself."""
    return CompiledOrEager(fn) if enabled and _compile_failure is None else fn


def runtime_record(device: torch.device | str, precision: str, compile: bool) -> dict[str, Any]:
    """What actually ran, for manifests and result rows: precision after ``auto`` was resolved, whether
    compiled code ran (False after a fallback, with the reason), threads, bf16 hardware and torch version."""
    return {
        "device": str(device),
        "precision": resolve_precision(precision, device),
        "compile": bool(compile) and _compile_failure is None,
        **({"compile_fallback": _compile_failure} if compile and _compile_failure is not None else {}),
        "threads": torch.get_num_threads(),
        "bf16_hardware": bf16_is_fast(device),
        "torch": torch.__version__,
    }
