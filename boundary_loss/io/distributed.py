"""Multi-process training with torchrun and DistributedDataParallel (`make NPROC=4`).

`torchrun --nproc_per_node=N main.py ...` starts N copies of main.py with RANK, LOCAL_RANK and
WORLD_SIZE in their environment; `setup` joins them into one process group (NCCL on GPUs, gloo on
CPUs, so the same code runs in the CPU tests). Every process reads its own share of the batches
(dataloader.ShardedBatchSampler), the logs of a pass are gathered in every process so all of them
take the same decisions (best epoch, learning rate, loss weights), and only rank 0 writes files.
Without torchrun, `Context()` is the single process: every call here is then a no-op.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


class LaunchError(Exception):
    """The processes cannot be set up as asked (more processes than GPUs, say)."""


@dataclass(frozen=True)
class Context:
    """Where this process stands among the processes of one training."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def writes(self) -> bool:
        """Only rank 0 writes the run folder."""
        return self.rank == 0

    def gather(self, obj: object) -> list:
        """`obj` of every process, in rank order (a one-item list in a single process)."""
        if not self.active:
            return [obj]
        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Give every process rank 0's buffers (BatchNorm running statistics)."""
        if self.active:
            for buffer in module.buffers():
                dist.broadcast(buffer, 0)

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether `flag` holds in any process (every process must call it)."""
        if not self.active:
            return flag
        value = torch.tensor([float(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())


def setup(cpu: bool) -> tuple[Context, torch.device]:
    """The context and device of this process; joins the process group under torchrun.

    Args:
        cpu: train on the CPU even when CUDA is present (`--cpu`).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = not cpu and torch.cuda.is_available()
    if world_size == 1:
        return Context(), torch.device("cuda" if use_cuda else "cpu")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise LaunchError(
                f"process {local_rank} of this machine has no GPU: {torch.cuda.device_count()} "
                "visible; use NPROC (torchrun --nproc_per_node) at most that number"
            )
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        # DistributedDataParallel imports torch._dynamo on first use, and that import keeps
        # references to the process groups that exist at that moment until the interpreter
        # exits (measured on torch 2.13: ten references to the default group). The group then
        # outlives destroy_process_group, and its gloo threads were still running while the
        # process exited: now and then one aborted ("terminate called without an active
        # exception"). Imported before the group exists, it holds none.
        importlib.import_module("torch._dynamo")

        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Context(rank, world_size, local_rank), device


def teardown(context: Context, finished: bool = False) -> None:
    """Leave the process group, and end it while the interpreter is whole.

    After a finished run, every process first waits for the others (a barrier): a process that
    destroyed the group while another was still closing its connections made that one abort at
    exit (gloo: "terminate called without an active exception"). After an error there is no
    barrier: the others may never come. destroy_process_group drops the last reference to the
    group (see `setup`), so its threads are joined here, not while the interpreter exits."""
    if context.active and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()
