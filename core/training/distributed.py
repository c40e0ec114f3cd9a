"""Data-parallel training over several processes started by torchrun (one machine or several).

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in each process; `world_from_env` reads
them, and without them training runs in one process as before. Each process takes its share of the global batch
(`--batch` stays the global batch) and the gradients of each phase are averaged over all processes before the
optimizer step, so every process keeps the same G, D, G_ema and Adam state. The averaging is one flat all-reduce
after each phase's backward, as in EG3D's and StyleGAN2-ADA's multi-GPU training, rather than torch's
DistributedDataParallel wrapper: the phases call G's stages (mapping, make_identity, ...), not a forward() the
wrapper could hook, each phase trains only G or only D, and the wrapper does not support R1's gradient penalty
(autograd.grad with create_graph; pytorch/pytorch#47562, #63812).

A step at world size N is the single-process step with the whole batch, up to float rounding:
- the data draws of a step are a function of (seed, step), the same in every process; each process keeps the rows
  of its shard (`batch_shard`);
- every random number the step draws per sample (latents, the camera swap of generator pose conditioning, the
  synthesis noise, the renderer's depth samples, D's label noise, the density regularization's points) is drawn
  for the whole batch from the same seeded stream in every process, and each keeps its rows (`BatchShard.draw`,
  and `BatchShard.random` for the draws inside the networks). The streams stay in step because every process
  draws the same amounts; at world size 1 the draws are exactly those the single-process code always made, so a
  run without torchrun gives the same bits as before;
- what looks across the batch sees the whole batch: the camera swap rolls the global cameras, D's label noise is
  scaled by the global batch's std, and the shard gives each process whole minibatch-std groups of D, the same
  groups as in one process (which is why the per-process batch must be a multiple of that group);
- G's running mean of w (the truncation centre, not used by the losses) is averaged after the step.
What differs is the order of float sums (a gradient summed in two halves, then averaged), so weights agree to float
rounding, which Adam's first steps can amplify for gradients near zero (tests/core/test_distributed.py states the
tolerance).

Snapshots, logs and sample grids are written by rank 0 alone; a state holds nothing that depends on the world size,
so any state resumes at any world size.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch.overrides import TorchFunctionMode

from ..errors import InputError, Next3DError

__all__ = ["World", "DistributedError", "world_from_env", "process_device", "process_group", "check_batch_split",
           "batch_shard", "BatchShard", "average_gradients", "average_", "any_rank", "broadcast_from_main",
           "check_same"]

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(Next3DError):
    """The processes of a distributed run lost each other (one crashed, was stopped, or stalled past the timeout),
    or started from different states."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env(environ: Optional[Dict[str, str]] = None) -> World:
    """The process's place in a torchrun job; World() (one process) when torchrun did not start it."""
    env = os.environ if environ is None else environ
    if "RANK" not in env and "WORLD_SIZE" not in env:
        return World()
    missing = [name for name in TORCHRUN_VARIABLES if not env.get(name)]
    if missing:
        raise InputError(f"This process has RANK/WORLD_SIZE but not {', '.join(missing)}; start distributed "
                         "training with torchrun (torchrun --nproc_per_node N -m core.cli train ...), which sets "
                         "them all, or unset RANK and WORLD_SIZE to train in one process.")
    try:
        world = World(rank=int(env["RANK"]), size=int(env["WORLD_SIZE"]), local_rank=int(env["LOCAL_RANK"]))
    except ValueError:
        raise InputError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers, got {env['RANK']!r}, "
                         f"{env['WORLD_SIZE']!r}, {env['LOCAL_RANK']!r}.") from None
    if not 0 <= world.rank < world.size:
        raise InputError(f"RANK {world.rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE {world.size}).")
    return world


def process_device(world: World, device: torch.device) -> torch.device:
    """Each process of a job on GPUs takes the GPU of its LOCAL_RANK."""
    if not world.distributed or device.type != "cuda":
        return device
    if device.index not in (None, world.local_rank):
        raise InputError(f"--device {device} names one GPU, but each process of a distributed run takes the GPU "
                         "of its LOCAL_RANK; give --device cuda (or auto).")
    if world.local_rank >= torch.cuda.device_count():
        raise InputError(f"LOCAL_RANK {world.local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                         "start at most that many processes per machine (torchrun --nproc_per_node).")
    return torch.device("cuda", world.local_rank)


@contextlib.contextmanager
def process_group(world: World, device: torch.device, timeout_s: float) -> Iterator[None]:
    """torch.distributed's process group for the run: gloo on the CPU, NCCL on GPUs. A collective that waits longer
    than `timeout_s` for another process fails instead of hanging."""
    if not world.distributed or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=world.rank, world_size=world.size,
                                timeout=timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as exc:
        raise DistributedError(f"Process {world.rank} could not join the other {world.size - 1} processes of the "
                               f"distributed run ({_first_line(exc)}).") from None
    try:
        yield
    finally:
        dist.destroy_process_group()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def _collective(world: World, what: str) -> Iterator[None]:
    try:
        yield
    except RuntimeError as exc:   # DistBackendError and gloo's connection errors are RuntimeErrors
        raise DistributedError(
            f"Process {world.rank} of {world.size} stopped while {what}: it lost contact with the other processes "
            f"({_first_line(exc)}). Another process failed or was stopped (its own message says why), or took longer "
            "than --dist-timeout; the last snapshot resumes the run.") from None


# ------------------------------------------------------------------------------------------------ the batch split

def check_batch_split(batch: int, world: World, mbstd_group: int) -> None:
    """The global batch must split into equal shards of whole minibatch-std groups."""
    if not world.distributed or batch < 1:
        return
    if batch % world.size:
        raise InputError(f"--batch {batch} does not split evenly over the {world.size} processes of this run "
                         f"(WORLD_SIZE); give a multiple of {world.size}. --batch is the global batch.")
    group = max(1, min(mbstd_group, batch))
    if (batch // world.size) % group:
        raise InputError(f"--batch {batch} gives each of the {world.size} processes {batch // world.size} images, "
                         f"not a multiple of the discriminator's minibatch-std group ({group}); its statistics are "
                         "taken over groups that must lie in one process for the run to train as one process would. "
                         f"Give a multiple of {world.size * group}.")


def batch_shard(batch: int, world: World, mbstd_group: int) -> "BatchShard":
    """This process's rows of the global batch. D's minibatch-std layer groups rows i, i + M, i + 2M, ... of a
    batch (M = batch / group), so each process takes whole groups, in the order that gives them the same local
    grouping: rows k*M + rank*m + l for k < group, l < m (m = M / world size)."""
    check_batch_split(batch, world, mbstd_group)
    if not world.distributed:
        return BatchShard.whole(batch)
    group = max(1, min(mbstd_group, batch))
    groups, per_rank = batch // group, batch // group // world.size
    rows = [k * groups + world.rank * per_rank + j for k in range(group) for j in range(per_rank)]
    return BatchShard(rows=torch.tensor(rows, dtype=torch.long), size=batch)


@dataclass(frozen=True)
class BatchShard:
    """Which rows of a global batch of `size` samples this process computes."""

    rows: torch.Tensor  # [b] long, positions in the global batch
    size: int

    @staticmethod
    def whole(size: int) -> "BatchShard":
        return BatchShard(rows=torch.arange(size), size=size)

    @property
    def is_whole(self) -> bool:
        return len(self.rows) == self.size

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """This process's rows of a [size, ...] tensor (the tensor itself for the whole batch)."""
        return x if self.is_whole else x[self.rows.to(x.device)]

    def draw(self, fn: Callable[..., torch.Tensor], shape: Sequence[int], device: torch.device,
             per_sample: int = 1) -> torch.Tensor:
        """`fn(size * per_sample, *shape)` (torch.rand or torch.randn), drawn as one process draws it for the whole
        batch, then this process's rows: [b * per_sample, *shape]."""
        full = fn((self.size * per_sample, *shape), device=device)
        if self.is_whole:
            return full
        return self.take(full.view(self.size, per_sample, *shape)).reshape(-1, *shape)

    def random(self) -> contextlib.AbstractContextManager:
        """Inside: the networks' own per-sample draws (torch.randn/rand with the local batch first) are drawn for the
        whole batch and cut to this process's rows; other random calls are refused, since they would not match one
        process."""
        return contextlib.nullcontext() if self.is_whole else _ShardedRandom(self)


_DRAWS = {torch.randn: torch.randn, torch.rand: torch.rand, torch.randn_like: torch.randn,
          torch.rand_like: torch.rand}
_OTHER_DRAWS = {torch.randint, torch.randint_like, torch.randperm, torch.normal, torch.bernoulli, torch.multinomial,
                torch.poisson, torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.bernoulli_,
                torch.Tensor.random_, torch.Tensor.exponential_, torch.Tensor.cauchy_, torch.Tensor.log_normal_,
                torch.Tensor.geometric_}


class _ShardedRandom(TorchFunctionMode):
    def __init__(self, shard: BatchShard):
        super().__init__()
        self.shard = shard

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in _DRAWS:
            if func in (torch.randn_like, torch.rand_like):
                like = args[0]
                size = tuple(like.shape)
                kwargs.setdefault("dtype", like.dtype)
                kwargs.setdefault("device", like.device)
                kwargs.pop("memory_format", None)
            elif "size" in kwargs:
                size = tuple(kwargs.pop("size"))
            else:
                size = tuple(args[0]) if len(args) == 1 and not isinstance(args[0], int) else tuple(args)
            if not size or size[0] != len(self.shard.rows):
                raise RuntimeError(f"{func.__name__}{list(size)} inside a data-parallel step does not draw one row "
                                   f"per sample (batch {len(self.shard.rows)}); draw it with BatchShard.draw.")
            full = _DRAWS[func]((self.shard.size, *size[1:]), **kwargs)
            return self.shard.take(full)
        if func in _OTHER_DRAWS:
            raise RuntimeError(f"{func.__name__} inside a data-parallel step would draw other numbers than one "
                               "process does; draw per-sample numbers with torch.randn/rand or BatchShard.draw.")
        return func(*args, **kwargs)


# ------------------------------------------------------------------------------------------------ collectives

def average_gradients(params: Iterable[torch.nn.Parameter], world: World) -> None:
    """Average .grad over the processes (one flat all-reduce; parameters without a gradient are left out, the same
    ones in every process)."""
    if not world.distributed:
        return
    params = [p for p in params if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.flatten() for p in params])
    with _collective(world, "averaging gradients"):
        dist.all_reduce(flat)
    flat /= world.size
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad.copy_(g.view_as(p.grad))


def average_(tensors: List[torch.Tensor], world: World, what: str = "averaging statistics") -> None:
    """Replace each tensor by its mean over the processes, in place."""
    if not world.distributed or not tensors:
        return
    flat = torch.cat([t.detach().flatten().to(torch.float64) for t in tensors])
    with _collective(world, what):
        dist.all_reduce(flat)
    flat /= world.size
    with torch.no_grad():
        for t, v in zip(tensors, flat.split([t.numel() for t in tensors])):
            t.copy_(v.view_as(t))


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True in every process when it is true in any (a Ctrl-C seen by one process stops all at the same step)."""
    if not world.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    with _collective(world, "agreeing whether to stop"):
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_from_main(obj: Any, world: World) -> Any:
    """Rank 0's `obj` (a small picklable value made by this project's code) in every process."""
    if not world.distributed:
        return obj
    box = [obj]
    with _collective(world, "receiving rank 0's decision"):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def check_same(value: Any, world: World, what: str) -> None:
    """Every process must hold the same `value` (e.g. a fingerprint of the weights they start from)."""
    if not world.distributed:
        return
    values: List[Any] = [None] * world.size
    with _collective(world, f"comparing {what}"):
        dist.all_gather_object(values, value)
    differ = [rank for rank, v in enumerate(values) if v != values[0]]
    if differ:
        raise DistributedError(f"Process(es) {differ} have other {what} than process 0 ({values[differ[0]]} vs "
                               f"{values[0]}); every machine must see the same dataset and run folder (a shared "
                               "filesystem, or identical copies at the same paths).")
