"""One process or many (torchrun): rank/world from the environment, and the few collectives the losses need.

Losses are written so that N processes with batch B compute the same loss and gradients as one process with
batch N*B: contrastive embeddings are gathered (differentiably) before InfoNCE, and every other mean divides
a local sum by the global count (`scaled_mean`), which DDP's gradient averaging turns into the global mean.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(use_cuda: bool, init_method: str = "env://") -> Dist:
    """Join the process group torchrun (or the caller) describes with WORLD_SIZE > 1 and RANK; NCCL on GPUs,
    gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", init_method=init_method,
                                rank=int(os.environ["RANK"]), world_size=world)
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's rows in rank order, keeping the gradient path to the local rows."""
    if not active():
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def scaled_mean(total: torch.Tensor, count: torch.Tensor | float) -> torch.Tensor:
    """This process's share of the global mean sum(total) / sum(count); equal to total / count alone."""
    n = torch.as_tensor(count, dtype=torch.float32, device=total.device).detach().clone()
    if active():
        dist.all_reduce(n)
        return total * dist.get_world_size() / n.clamp_min(1.0)
    return total / n.clamp_min(1.0)


def mean_over_processes(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average logged numbers over processes (each holds its share of the global loss)."""
    if not active() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist(), strict=True))


def barrier() -> None:
    if active():
        dist.barrier()
