"""Scale-out with ``torch.distributed``: one process per GPU (or CPU worker), launched by ``torchrun``.

Distribution matching is independent per class, so a distillation is sharded by class: rank ``r`` of ``W``
owns the ``r``-th contiguous block of the run's classes (:meth:`RankGroup.shard`) and learns only their
synthetic images, while every rank draws the *whole* run's random stream (each class's real-batch
permutation and DSA parameters, and the same network per iteration, a function of seed and iteration). A
rank's pixels therefore see exactly the numbers they would see in one process, and the gathered set (end,
checkpoints, periodic evaluations) equals the single-process result for the same seed (tested bit for bit on
CPU with gloo, docs/scale-out.md). Checkpoints hold the gathered set, so a run may resume on another number
of processes. Only rank 0 writes (checkpoints, log, artifact); it reads a checkpoint and broadcasts it, so
nodes need no shared file system.

What stays replicated: the networks (fresh random nets cost one initialisation per rank) and IDM's queue of
partly trained networks, which every rank trains identically from the same seed on all classes (it has to
see every class; training it on one rank and broadcasting every iteration would cost more than it saves on
the small ConvNets IDM uses). IDM's speed-up is then bounded by the queue's share of an iteration.

Objectives that couple classes within a step cannot be sharded this way and are refused by
:func:`check_shardable` with the reason (see :data:`CLASS_SEPARABLE`).
"""

from __future__ import annotations

import atexit
import datetime
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

ENV_TIMEOUT = "DISTILLSET_DIST_TIMEOUT_MINUTES"  # collective timeout; rank 0's periodic evaluation runs alone


@dataclass(frozen=True)
class Ranks:
    """Where this process sits in a torchrun job (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        """Rank 0 writes checkpoints, logs, artifacts and results."""
        return self.rank == 0


def ranks_from_env(env: Mapping[str, str] | None = None) -> Ranks:
    """The rank layout torchrun exports; one process (rank 0 of 1) when the variables are absent."""
    env = os.environ if env is None else env
    try:
        ranks = Ranks(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0")))
    except ValueError as exc:
        raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them): {exc}") from None
    if ranks.world_size < 1 or not 0 <= ranks.rank < ranks.world_size or ranks.local_rank < 0:
        raise ValueError(f"inconsistent torchrun environment: RANK={ranks.rank}, WORLD_SIZE={ranks.world_size}, "
                         f"LOCAL_RANK={ranks.local_rank}")
    return ranks


def rank_device(device: str | torch.device, ranks: Ranks) -> torch.device:
    """The device of this rank: ``cuda`` becomes ``cuda:LOCAL_RANK`` (one GPU per process), ``cpu`` stays."""
    device = torch.device(device)
    if device.type != "cuda" or not ranks.distributed:
        return device
    if device.index is not None:
        raise ValueError(f"--device {device} names one GPU, but under torchrun each process takes "
                         "cuda:LOCAL_RANK; pass --device cuda")
    if ranks.local_rank >= torch.cuda.device_count():
        raise ValueError(f"LOCAL_RANK {ranks.local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                         "start at most one process per GPU (torchrun --nproc_per_node)")
    return torch.device("cuda", ranks.local_rank)


def deterministic_mode() -> None:
    """Deterministic kernels where PyTorch has them (``torch.use_deterministic_algorithms``, cuDNN autotuning off,
    the cuBLAS workspace setting it needs), at some speed. CPU runs are deterministic already. On a GPU, ops
    without a deterministic CUDA kernel (the backward of ``grid_sample``, used by DSA's scale and rotate, and of
    bilinear upsampling, used by IDM's expansion) warn once instead of failing; runs using them match within float
    rounding only (docs/scale-out.md)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def class_block(classes: Sequence[int], rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s contiguous block of ``classes`` out of ``world_size`` (sizes differ by at most one)."""
    n = len(classes)
    return list(classes[rank * n // world_size : (rank + 1) * n // world_size])


class RankGroup:
    """The processes of one torchrun job and the few collectives the engine and evaluation need.

    Collectives run on the rank's device for NCCL (CUDA) and on the CPU for gloo."""

    def __init__(self, ranks: Ranks, device: torch.device) -> None:
        self.ranks = ranks
        self.rank, self.world_size, self.is_writer = ranks.rank, ranks.world_size, ranks.is_writer
        self.device = device if dist.get_backend() == "nccl" else torch.device("cpu")

    # ------------------------------------------------------------ classes
    def block(self, classes: Sequence[int], rank: int) -> list[int]:
        """Rank ``rank``'s classes (:func:`class_block`)."""
        return class_block(classes, rank, self.world_size)

    def shard(self, classes: Sequence[int]) -> list[int]:
        """The classes this rank owns; every rank needs at least one."""
        if len(classes) < self.world_size:
            raise ValueError(f"{len(classes)} classes cannot be split over {self.world_size} processes; start at "
                             f"most {len(classes)} (torchrun --nproc_per_node / --nnodes)")
        return self.block(classes, self.rank)

    # -------------------------------------------------------- collectives
    def all_gather_rows(self, local: Tensor, rows_per_rank: Sequence[int]) -> Tensor:
        """Concatenate every rank's ``local`` rows in rank order (ranks may hold different numbers of rows)."""
        longest = max(rows_per_rank)
        padded = local.detach().to(self.device)
        if len(padded) < longest:
            padded = torch.cat([padded, padded.new_zeros((longest - len(padded), *padded.shape[1:]))])
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([part[:rows] for part, rows in zip(parts, rows_per_rank, strict=True)]).to(local.device)

    def any(self, flags: Sequence[bool]) -> list[bool]:
        """Element-wise OR of ``flags`` over ranks, so every rank takes the same branch."""
        values = torch.tensor([int(flag) for flag in flags], dtype=torch.int64, device=self.device)
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return [bool(v) for v in values.tolist()]

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise float64 sum over ranks."""
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (other ranks' argument is ignored)."""
        box = [obj if self.is_writer else None]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def all_gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def barrier(self) -> None:
        dist.barrier()


def join(ranks: Ranks, device: torch.device) -> RankGroup | None:
    """Join this process's torchrun job (NCCL on CUDA, gloo on CPU; left at exit); None for a single process."""
    if not ranks.distributed:
        return None
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        minutes = float(os.environ.get(ENV_TIMEOUT, "120"))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=minutes))
        atexit.register(dist.destroy_process_group)
    return RankGroup(ranks, device)


def _hdd_separable(params: Mapping[str, Any]) -> str | None:
    if params.get("feature_scale", 1.0) == "unit-mean-norm":
        return ("feature_scale='unit-mean-norm' divides by the mean norm of the step's real features over all "
                "classes; use a numeric feature_scale to shard")
    return None


# Objectives whose step loss is a sum of per-class terms, each computed from that class's features only
# (plus numbers every rank has: the dataset's class sizes, the objective's own random stream). Each maps to a
# check of its parameters (a reason they couple classes, or None). SDD/CSDM draw their frequencies from the
# objective stream once per loss call, which is why they cannot shard a one-step-per-class (IDM) loop.
CLASS_SEPARABLE: dict[str, Callable[[Mapping[str, Any]], str | None]] = {
    "dm": lambda params: None,
    "hdd": _hdd_separable,
    "sdd": lambda params: None,
    "csdm": lambda params: None,
}
DRAWS_PER_LOSS = ("sdd", "csdm")


def check_shardable(objective: str, params: Mapping[str, Any], *, step_per_class: bool, ce_weight: float) -> None:
    """Raise ValueError (naming the reason and what to do) unless a run with these settings can be sharded
    by class with the same result as one process."""
    fix = "run it in one process (without torchrun), or shard a different method"
    if objective not in CLASS_SEPARABLE:
        raise ValueError(f"objective '{objective}' is not known to split into per-class terms (its loss may pool "
                         f"the step's classes, as UniDD/CFM's ridge statistics do), so it cannot be sharded over "
                         f"processes; {fix}. Shardable: {', '.join(CLASS_SEPARABLE)}")
    reason = CLASS_SEPARABLE[objective](params)
    if reason:
        raise ValueError(f"objective '{objective}' cannot be sharded over processes: {reason}; or {fix}")
    if step_per_class and objective in DRAWS_PER_LOSS:
        raise ValueError(f"'{objective}' draws its frequencies once per class step, which a rank cannot replay "
                         f"for classes it does not own, so IDM-style runs with it cannot be sharded; {fix}")
    if ce_weight > 0 and not step_per_class:
        raise ValueError("the class-aware CE term averages over all classes of a step when classes are not "
                         f"stepped one at a time, so it couples them; {fix}")
