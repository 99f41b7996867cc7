"""Device choice and multi-process (``torchrun``) set-up.

One process per GPU (or per CPU process with the gloo backend). ``torchrun``
sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``; without them everything here is
a single-process no-op. Rank 0 logs, checkpoints and evaluates; every rank
samples its own batch slice from a generator seeded ``seed + rank_offset * rank``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "resolve_device",
    "init_distributed",
    "barrier",
    "broadcast_object",
    "cleanup",
    "RANK_SEED_OFFSET",
]

RANK_SEED_OFFSET = 1_000_003
"""Added per rank to the batch-sampling seed, so ranks draw different batches."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size`` (``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``; ``cuda`` -> ``cuda:LOCAL_RANK``.

    Raises ValueError for a CUDA request on a machine without CUDA or an out-of-range index.
    """
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"runtime.device={spec!r} but CUDA is not available on this machine (use auto or cpu)")
        index = int(spec.split(":")[1]) if ":" in spec else local_rank
        if index >= torch.cuda.device_count():
            raise ValueError(f"runtime.device={spec!r}: only {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    raise ValueError(f"runtime.device={spec!r}: expected auto, cpu, cuda or cuda:N")


def init_distributed(device_spec: str) -> tuple[DistInfo, torch.device]:
    """Initialise the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1).

    Backend: NCCL on CUDA, gloo on CPU. Returns the rank information and this process's device.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    info = DistInfo(rank=rank, world_size=world, local_rank=local_rank)
    device = resolve_device(device_spec, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info, device


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (identity in a single process)."""
    if not (info.enabled and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
