"""Data-parallel training under ``torchrun``: the process group, and the few collectives the loop needs.

``torchrun`` (which the training image's toolkit starts when a job has ``sagemaker_torch_distributed_enabled``)
sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` for every process it starts. With a world size above one the
job joins a process group: NCCL when it trains on CUDA (each process on its local GPU), gloo on CPU. Rank 0 is
the main process: it alone evaluates, writes checkpoints, the artifact, the reports, the smdebug trial and the
metric lines. Without ``torchrun`` everything here is a no-op, and the job is the single process it always was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from dogbreed import settings

log = logging.getLogger(__name__)

# How long a collective may wait for a missing rank before it fails. A rank that dies closes its sockets and
# the others fail at once; this bounds the rarer case of a rank that hangs.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class Group:
    """This process's place in the job: world size, global rank, rank on its host, and the backend."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str = "none"

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return f"world_size={self.world_size} rank={self.rank} local_rank={self.local_rank} backend={self.backend}"

    def stop_signal(self, signum: int | None) -> int | None:
        """The stop signal any rank has seen (the same answer on every rank), so all stop at one step."""
        if not self.active:
            return signum
        flag = torch.tensor([signum or 0], device=self._device())
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item()) or None

    def sum(self, *values: float) -> list[float]:
        """``values`` summed over all ranks."""
        if not self.active:
            return list(values)
        total = torch.tensor(values, dtype=torch.float64, device=self._device())
        torch.distributed.all_reduce(total)
        return total.tolist()

    def from_main(self, value: Any) -> Any:
        """Rank 0's ``value``, on every rank."""
        if not self.active:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0, device=self._device())
        return box[0]

    def _device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")


def from_environment() -> Group:
    """What torchrun says about this process (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``); one process without it."""
    world_size = settings.positive_int("WORLD_SIZE", 1)
    if world_size == 1:
        return Group()
    return Group(world_size, settings.natural_int("RANK", 0), settings.natural_int("LOCAL_RANK", 0))


def start(device_name: str) -> Group:
    """Join the job's process group when torchrun started more than one process, and log this process's place.

    ``device_name`` is the ``--device`` flag: NCCL serves CUDA training, gloo serves CPU.
    """
    group = from_environment()
    if group.active:
        cuda = device_name != "cpu" and torch.cuda.is_available()
        group = Group(group.world_size, group.rank, group.local_rank, "nccl" if cuda else "gloo")
        if cuda:
            torch.cuda.set_device(group.local_rank)
        torch.distributed.init_process_group(group.backend, timeout=COLLECTIVE_TIMEOUT)
    log.info("distributed: %s", group.describe())
    return group


def end(group: Group) -> None:
    if group.active and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
