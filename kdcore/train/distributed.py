"""One run over several processes with torch.distributed: the process group, the data shard, reductions.

Every rank runs the same trainer. The process group is initialised from the environment PyTorch's elastic
launcher (torchrun, `python -m torch.distributed.run`) sets: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT. Without it the world is one process and nothing here touches torch.distributed."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from kdcore.errors import KDError

# The rule the trainer applies to the learning rate when the world grows: `batch_size` is the global batch
# (per-device batch × devices × nodes × accumulation steps), so the step the lr was tuned for is unchanged.
LR_SCALING_RULE = "none: batch_size is the global batch, so the spec's lr applies unchanged on any world size"


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    """This process's place in the job, as the elastic launcher describes it (one process when absent)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise KDError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (as torchrun sets them)") from None
    return World(rank=rank, local_rank=local, size=size)


def rank_device(world: World, device: torch.device) -> torch.device:
    """A CUDA rank drives the GPU of its local rank; CPU ranks share the CPU."""
    if world.distributed and device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise KDError(f"local rank {world.local_rank} has no GPU: this machine shows "
                          f"{torch.cuda.device_count()}; ask for at most that many devices per node")
        return torch.device("cuda", world.local_rank)
    return device


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def start(world: World, device: torch.device) -> bool:
    """Join the job's process group; True when this call created it (and so must destroy it)."""
    if not world.distributed or dist.is_initialized():
        return False
    if device.type not in ("cpu", "cuda"):
        raise KDError(f"a run over several processes needs CPU or CUDA devices, not {device.type}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device), rank=world.rank, world_size=world.size,
                            **({"device_id": device} if device.type == "cuda" else {}))
    return True


def stop(created: bool) -> None:
    if created and dist.is_initialized():
        dist.destroy_process_group()


def shard(n: int, world: World) -> Tensor:
    """This rank's positions among n samples: every size-th one from its rank, over the first
    n - n % size samples, so every rank holds as many samples and takes as many steps (DDP needs both)."""
    usable = n - n % world.size
    if usable == 0:
        raise KDError(f"the transfer set has {n} samples, fewer than the {world.size} processes of the run")
    return torch.arange(world.rank, usable, world.size)


def eval_span(n: int, world: World) -> tuple[int, int]:
    """This rank's contiguous block [start, stop) of n evaluation samples: blocks differ in size by at most
    one and cover every sample exactly once (no padding, so nothing is counted twice)."""
    return n * world.rank // world.size, n * (world.rank + 1) // world.size


def gather_rows(local: Tensor, n: int, world: World) -> Tensor:
    """Every rank's block of rows (its `eval_span` of n), in order, on every rank: the whole split's
    predictions, each sample once. The blocks are padded to one size for all_gather and cut back after."""
    if not world.distributed:
        return local
    spans = [eval_span(n, World(rank=r, size=world.size)) for r in range(world.size)]
    most = max(stop - start for start, stop in spans)
    padded = local.new_zeros((most, *local.shape[1:]))
    padded[:len(local)] = local
    parts = [torch.empty_like(padded) for _ in spans]
    dist.all_gather(parts, padded)
    return torch.cat([part[:stop - start] for part, (start, stop) in zip(parts, spans)])


def broadcast_buffers(module: torch.nn.Module, world: World) -> None:
    """Rank 0's buffers (BatchNorm statistics) on every rank, so that every rank evaluates the student rank 0
    checkpoints. Training is unchanged: in training mode BatchNorm normalises with the batch's statistics."""
    if world.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def sum_over_ranks(values: list[float], world: World, device: torch.device) -> list[float]:
    """Element-wise sum of per-rank numbers (train loss sums, counts) over the whole job."""
    if not world.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def same_on_every_rank(value: float, world: World, device: torch.device) -> bool:
    """Whether every rank holds this value (the same answer on every rank)."""
    if not world.distributed:
        return True
    t = torch.tensor([value, -value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t[0]) == -float(t[1])


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank when it is true on one (a stop request reaches rank 0 only)."""
    if not world.distributed:
        return flag
    return sum_over_ranks([float(flag)], world, device)[0] > 0


def barrier(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.barrier()


def launched() -> bool:
    """Whether this process is a rank started by the elastic launcher."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def launcher_command(script_args: list[str], *, devices: int, nodes: int = 1, endpoint: str | None = None,
                     run_id: str = "kdcore", node_rank: int | None = None) -> list[str]:
    """`python -m torch.distributed.run ... -m kdcore ARGS`: PyTorch's elastic launcher starts `devices`
    ranks here; with several nodes the launchers of all machines meet through c10d rendezvous at `endpoint`
    (host:port, the same on every machine). One node without an endpoint rendezvous on a free local port.
    With `node_rank` (a worker's node of a queued run) node 0's launcher hosts the rendezvous store and the
    others only connect to it, waiting a few minutes for it to come up."""
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(devices),
           "--max-restarts", "0"]
    if endpoint is None:
        if nodes > 1:
            raise KDError(f"a run over {nodes} nodes needs a rendezvous endpoint host:port that every node reaches")
        cmd.append("--standalone")
    else:
        cmd += ["--nnodes", str(nodes), "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", run_id]
        if node_rank is not None:
            cmd += ["--node-rank", str(node_rank), "--rdzv-conf", f"is_host={int(node_rank == 0)},read_timeout=300"]
    return cmd + ["-m", "kdcore", *script_args]


def run_launcher(cmd: list[str], env: dict | None = None) -> int:
    """Run the launcher to its end; SIGINT/SIGTERM here are passed on to it (it forwards them to every rank)."""
    import signal
    import subprocess

    proc = subprocess.Popen(cmd, env=env)
    forward = {sig: signal.signal(sig, lambda s, _f: proc.send_signal(s)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for sig, old in forward.items():
            signal.signal(sig, old)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
