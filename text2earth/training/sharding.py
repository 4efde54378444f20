"""What sharded strategies (FSDP, FSDP2, DeepSpeed ZeRO-3) do to a network's parameters, in one place.

Each rank holds only a slice of every weight. ``local_tensor`` is that slice (elementwise arithmetic on it,
like an EMA update, is correct slice by slice); ``full_parameters`` makes the full weights visible on every
rank for a block (a collective: every rank must enter it); ``full_value`` is a parameter's full tensor
inside that block. Unsharded strategies (DDP, DeepSpeed ZeRO-1/2) pass straight through.

- Lightning's ``FSDPStrategy`` (torch FSDP1, ``use_orig_params=True``): ``summon_full_params``.
- FSDP2 (``fully_shard``; Lightning's ``ModelParallelStrategy``): parameters are ``DTensor``s.
- DeepSpeed ZeRO-3: ``p.ds_tensor`` is the slice, ``deepspeed.zero.GatheredParameters`` gathers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from text2earth.core.errors import UserError

# Names FSDP1 / activation checkpointing / torch.compile wrappers insert into parameter names.
_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def clean_name(name: str) -> str:
    """A parameter name as the plain network spells it (what checkpoints and exports use)."""
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def is_dtensor(p: torch.Tensor) -> bool:
    return type(p).__name__ == "DTensor"


def local_tensor(p: torch.Tensor) -> torch.Tensor:
    """This rank's slice of ``p`` (``p`` itself when it is not sharded); writes to it change the parameter."""
    if hasattr(p, "ds_tensor"):  # DeepSpeed ZeRO-3 partition
        return p.ds_tensor
    if is_dtensor(p):
        return p.to_local()
    return p  # DDP / ZeRO-2, or FSDP1 with use_orig_params (a view into this rank's flat shard)


def full_value(p: torch.Tensor) -> torch.Tensor:
    """``p``'s full tensor; inside ``full_parameters`` for FSDP1 / ZeRO-3 (a collective for a DTensor)."""
    return p.full_tensor() if is_dtensor(p) else p


def sharding_kind(strategy: Any) -> str | None:
    """``"fsdp"``, ``"zero3"``, ``"dtensor"`` or ``None`` (every rank holds full weights) for a Lightning strategy."""
    name = type(strategy).__name__
    if "FSDP" in name:
        if not getattr(strategy, "kwargs", {}).get("use_orig_params", True):
            raise UserError("FSDP needs use_orig_params=true for the EMA and LoRA parameter views")
        return "fsdp"
    if "DeepSpeed" in name and getattr(strategy, "zero_stage_3", False):
        return "zero3"
    if "ModelParallel" in name:
        return "dtensor"
    return None


@contextlib.contextmanager
def full_parameters(
    kind: str | None, root: torch.nn.Module | None, params: Iterable[torch.nn.Parameter], writeback: bool
) -> Iterator[None]:
    """Full weights in ``params`` on every rank for the block; with ``writeback``, what the block writes
    into them is sharded back (from rank 0's values under ZeRO-3). ``root`` is the FSDP1-wrapped model."""
    if kind == "fsdp":
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        with FSDP.summon_full_params(root, writeback=writeback, rank0_only=False):
            yield
    elif kind == "zero3":
        import deepspeed  # only reachable when the strategy itself was built, i.e. deepspeed is installed

        with deepspeed.zero.GatheredParameters(list(params), modifier_rank=0 if writeback else None):
            yield
    else:  # unsharded, or DTensor (gathered per tensor by full_value)
        yield


def shard_like(full: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """This rank's slice of ``full`` laid out as ``local_tensor(p)`` (DTensor only; others go through
    ``full_parameters(writeback=True)``)."""
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full.to(p.device, p.dtype), p.device_mesh, p.placements).to_local()


def clip_sharded_grad_norm(strategy: Any, max_norm: float | None, algorithm: str | None) -> bool:
    """Clip gradients by their global norm under FSDP1 (``FSDP.clip_grad_norm_`` gathers the norm across
    shards); True when done. Lightning's own path raises for FSDP, and DeepSpeed clips in its engine."""
    if not max_norm or (algorithm or "norm") != "norm" or sharding_kind(strategy) != "fsdp":
        return False
    strategy.model.clip_grad_norm_(max_norm)
    return True


def deepspeed_strategy(stage: int = 2, **kwargs: Any) -> Any:
    """Lightning's ``DeepSpeedStrategy`` (ZeRO ``stage``), or a one-line error when DeepSpeed is missing."""
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        raise UserError(
            "trainer=deepspeed needs the deepspeed package (not installed; it needs CUDA): "
            "pip install deepspeed, or use trainer=ddp / trainer=fsdp"
        ) from None
    from lightning.pytorch.strategies import DeepSpeedStrategy

    return DeepSpeedStrategy(stage=stage, **kwargs)
