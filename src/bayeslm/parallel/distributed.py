"""Data parallelism over torch.distributed: which share of a step each process samples, and the few collectives
the training loop needs.

Launched by `torchrun` or `accelerate launch` (both set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT), every process holds the whole model. A step's global batch is what the config says,
prompts_per_step × samples_per_prompt × grad_accum continuations; it is cut into whole prompt groups (so
leave-one-out baselines and per-prompt log Z see every sample of their prompt) and each process samples and
scores its share:

- when grad_accum is a multiple of the number of processes, each takes whole micro-batches, with the seeds a
  single process would use: the union of the shards *is* the single-process batch;
- otherwise every micro-batch's prompts are split between the processes, each sampling its part with a seed of
  its own: a batch of the same law and size, but not the same draws.

Gradients are summed over processes after each process has weighted its losses by its rows' share of the global
batch, so the global loss and gradient are those of one process holding the whole batch. Figures are computed
on the gathered global batch, identically on every process, so objective state that depends on them (adaptive
β, running log Z, the DPG proposal swap) stays the same everywhere. Only rank 0 writes files and prints.
"""

from __future__ import annotations

import os
import pickle
import sys
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from bayeslm.config import ConfigError

BUCKET = 1 << 24  # gradient elements per all-reduce: one round trip per bucket, bounded extra memory


@dataclass(frozen=True)
class Unit:
    """One process's piece of one micro-batch: prompts [start, stop) of micro-batch `draw`, sampled with `seed`.
    `fraction` is its share of the micro-batch's rows (1.0 for a whole one)."""

    draw: int
    start: int
    stop: int
    fraction: float
    seed: int

    @property
    def key(self) -> tuple[int, int]:
        return self.draw, self.start  # the order of the single-process batch


@dataclass(frozen=True)
class World:
    """This process's rank among `size` processes, and the device its model lives on. `owns_group`: the process
    group was started here (and is closed here), not by the caller."""

    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def units(self, step: int, grad_accum: int, count: int, seed: int) -> list[Unit]:
        """This process's share of optimiser step `step`: micro-batches of `count` prompts each."""
        draws = range(step * grad_accum, (step + 1) * grad_accum)
        base = [seed * 1_000_003 + d for d in draws]  # the single-process seeds (`Stepper.draw`)
        if grad_accum % self.size == 0:  # whole micro-batches, contiguous blocks: the single-process draws
            share = grad_accum // self.size
            return [Unit(d, 0, count, 1.0, s) for d, s in list(zip(draws, base))[self.rank * share:][:share]]
        if count < self.size:
            raise ConfigError(f"{self.size} processes cannot share a step of grad_accum={grad_accum} micro-batches "
                              f"of {count} prompt(s) each: make grad_accum a multiple of {self.size} (the batches of "
                              f"one process exactly) or prompts_per_step at least {self.size}")
        start, stop = count * self.rank // self.size, count * (self.rank + 1) // self.size
        # A seed of its own per (micro-batch, rank); single-process seeds are 1_000_003 apart, so none repeats.
        return [Unit(d, start, stop, (stop - start) / count, s * self.size + self.rank)
                for d, s in zip(draws, base)]

    # ----- collectives (no-ops for one process) ----------------------------------------------------------------

    def sum(self, value: float) -> float:
        if self.size == 1:
            return value
        tensor = torch.tensor(value, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.item()

    def any(self, flag: bool) -> bool:
        if self.size == 1:
            return flag
        tensor = torch.tensor(int(flag), device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def gather(self, local: list, *, to_main: bool = False) -> list:
        """Every process's list, concatenated in rank order (picklable items: keep tensors on the CPU); with
        to_main, only rank 0 receives them (the others get [])."""
        if self.size == 1:
            return list(local)
        out = [None] * self.size if self.main or not to_main else None
        if to_main:
            dist.gather_object(local, out, dst=0)
        else:
            dist.all_gather_object(out, local)
        return [item for part in out for item in part] if out is not None else []

    def broadcast(self, value):
        """Rank 0's value, on every process."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, fn, *args):
        """Runs fn on rank 0 only (file writes); an exception there is raised on every process, so none waits
        forever in the next collective."""
        error, result = None, None
        if self.main:
            try:
                result = fn(*args)
            except Exception as caught:  # noqa: BLE001 - re-raised below, on every rank
                error = caught
        if self.size > 1:
            shared = self.broadcast(_picklable(error))
            if error is None and shared is not None:
                error = shared
        if error is not None:
            raise error
        return result

    def sum_gradients(self, params: list[torch.Tensor]):
        """All-reduces .grad (a missing one counts as zeros), flattening into buckets of BUCKET elements. Sharded
        parameters are left out: the backward pass reduce-scattered theirs (`bayeslm.parallel.sharding`)."""
        if self.size == 1:
            return
        params = [p for p in params if not isinstance(p, DTensor)]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        buckets, current, size = [], [], 0
        for p in params:
            if current and (size + p.numel() > BUCKET or p.grad.dtype != current[0].grad.dtype):
                buckets.append(current)
                current, size = [], 0
            current.append(p)
            size += p.numel()
        if current:
            buckets.append(current)
        for bucket in buckets:
            flat = torch.cat([p.grad.reshape(-1) for p in bucket])
            dist.all_reduce(flat)
            offset = 0
            for p in bucket:
                p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
                offset += p.numel()

    def broadcast_parameters(self, params: list[torch.Tensor]):
        """Rank 0's weights everywhere (every rank seeds the same initialisation; this makes sure)."""
        if self.size > 1:
            with torch.no_grad():
                for p in params:
                    dist.broadcast(p.data, src=0)

    def check_same(self, name: str, value):
        """Raises if `value` (e.g. the objective's state) differs between processes: a bug, never noise."""
        if self.size > 1:
            values = self.gather([value])
            if any(v != values[0] for v in values[1:]):
                raise RuntimeError(f"the {name} differs between processes ({values}); data-parallel training "
                                   "must keep it identical")


def _picklable(error):
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - an exception with unpicklable parts travels as its message
        return RuntimeError(f"{type(error).__name__}: {error}")


def init() -> World:
    """The world of this process: one process unless launched with WORLD_SIZE > 1, in which case the process
    group is initialised (gloo on CPU, nccl when CUDA is available) and ranks > 0 send stdout to /dev/null."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if _flag("ACCELERATE_USE_DEEPSPEED"):
        raise ConfigError("DeepSpeed is not supported: bayeslm runs its own training loop, not DeepSpeed's engine. "
                          "For ZeRO's sharded weights, gradients and optimiser state set sharding: full in the "
                          "training config (FSDP2) and launch with examples/accelerate/fsdp.yaml or torchrun "
                          "(see docs/distributed.md)")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        backend, device = "nccl", torch.device("cuda", local_rank)
    else:
        backend, device = "gloo", torch.device("cpu")
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend)
    if rank != 0:  # results go to stdout once; diagnostics (stderr) stay visible from every process
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    return World(rank, size, device, owns_group)


def launched_with_fsdp() -> bool:
    """Whether `accelerate launch` was given an FSDP config: the training config's `sharding: full` then."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and _flag("ACCELERATE_USE_FSDP")


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true")


@contextmanager
def joined():
    """This process's world (`init`) for the body of a `with`, closed after it. On a clean exit every process
    waits for the others before the group is destroyed: a process that destroyed its group and exited while
    another was still writing the run aborted ("terminate called without an active exception", about one
    two-process run in six on CPU). After an exception nobody waits: the others may never arrive."""
    world = init()
    try:
        yield world
    except BaseException:
        _close(world, wait=False)
        raise
    _close(world, wait=True)


def _close(world: World, *, wait: bool):
    if world.owns_group and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()
