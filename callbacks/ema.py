"""Exponential moving average of the trained network's weights, as a Lightning callback.

Correct under DDP: after each optimiser step every rank holds identical weights, so every rank
keeps an identical EMA; only rank 0 writes it, as part of the checkpoint (callback state).
Validation (and the sample logger, and export) run on the EMA weights by swapping them in.
Sharded strategies (FSDP, FSDP2, DeepSpeed ZeRO-3) hold only a slice of each weight per rank: there each
rank averages its own slice (the update is elementwise, so slice by slice is exact and costs 1/N of
the memory), and at save time the slices are gathered into full tensors that rank 0 writes, so a
checkpoint's EMA has the same plain format under every strategy (export reads it unchanged); on
resume each rank takes its slice of it again (text2earth/training/sharding.py). A network with no trainable weights
(the frozen UNet beside a ControlNet) leaves nothing to average: the callback then does nothing and
adds no state to checkpoints.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch

from callbacks.steps import OptimizerStepCallback
from text2earth.training.sharding import (
    clean_name,
    full_parameters,
    full_value,
    local_tensor,
    shard_like,
    sharding_kind,
)


class EMA(OptimizerStepCallback):
    """EMA updates once per optimizer step (``update_every`` and ``start_step`` count optimizer steps too), so
    gradient accumulation does not turn ``decay`` into ``decay**k``; ``num_updates`` drives the warm-up."""

    def __init__(
        self,
        decay: float = 0.9999,
        attr: str = "unet",
        update_every: int = 1,
        start_step: int = 0,
        warmup: bool = True,
        validate_with_ema: bool = True,
    ) -> None:
        self.decay = decay
        self.attr = attr
        self.update_every = update_every
        self.start_step = start_step
        self.warmup = warmup
        self.validate_with_ema = validate_with_ema
        self.shadow: dict[str, torch.Tensor] = {}
        self.num_updates = 0
        self._backup: dict[str, torch.Tensor] | None = None
        # Sharding (set by ``bind``): the kind, the wrapped model, the module; and whether ``shadow`` holds
        # full tensors from a checkpoint that still have to be cut into this rank's slices.
        self._kind: str | None = None
        self._root: torch.nn.Module | None = None
        self._module: L.LightningModule | None = None
        self._restored_full = False

    def _named(self, pl_module: L.LightningModule) -> dict[str, torch.nn.Parameter]:
        net = getattr(pl_module, self.attr)
        return {clean_name(name): p for name, p in net.named_parameters() if p.requires_grad}

    def _params(self, pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
        """The trained weights as this rank holds them: full under DDP, its slices under sharding."""
        return {name: local_tensor(p) for name, p in self._named(pl_module).items()}

    def current_decay(self) -> float:
        # Warm-up as in diffusers' EMAModel: early averages forget the random init quickly.
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.bind(pl_module, sharding_kind(trainer.strategy), trainer.strategy.model)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Sharded strategies restore callback state after on_fit_start: slice a restored EMA here.
        self._localise(pl_module)

    def bind(self, pl_module: L.LightningModule, kind: str | None = None, root: torch.nn.Module | None = None) -> None:
        """Attach to the (possibly sharded: ``kind``, see ``sharding_kind``) module; start or place the EMA."""
        self._kind, self._root, self._module = kind, root, pl_module
        if not self.shadow:
            self.shadow = {n: p.detach().float().clone() for n, p in self._params(pl_module).items()}
        else:
            self._localise(pl_module)

    @torch.no_grad()
    def _localise(self, pl_module: L.LightningModule) -> None:
        """A restored (full) EMA -> this rank's slices on the module's device (a collective when sharded)."""
        if not self._restored_full or not self.shadow:
            return
        named = self._named(pl_module)
        if self._kind is None:
            self.shadow = {n: t.to(named[n].device) for n, t in self.shadow.items()}
        elif self._kind == "dtensor":
            self.shadow = {n: shard_like(self.shadow[n], p).float() for n, p in named.items()}
        else:  # write the full EMA in, let the strategy re-shard it, read this rank's slices, restore
            backup = {n: local_tensor(p).detach().clone() for n, p in named.items()}
            with full_parameters(self._kind, self._root, named.values(), writeback=True):
                for n, p in self._named(pl_module).items():
                    p.copy_(self.shadow[n])
            self.shadow = {n: local_tensor(p).detach().float().clone() for n, p in named.items()}
            for n, p in named.items():
                local_tensor(p).copy_(backup[n])
        self._restored_full = False

    @torch.no_grad()
    def full_shadow(self) -> dict[str, torch.Tensor]:
        """The whole EMA as full fp32 CPU tensors on rank 0 (empty elsewhere when sharded).

        Under sharding this is a collective: every rank must call it (Lightning builds checkpoint state on
        every rank, so ``state_dict`` does). The EMA slices are swapped into the network and the strategy
        gathers them as it gathers weights; one parameter at a time is gathered for a DTensor.
        """
        if self._kind is None or self._module is None or self._restored_full:
            return {n: t.cpu() for n, t in self.shadow.items()}
        rank0 = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
        out: dict[str, torch.Tensor] = {}
        named = self._named(self._module)
        with self.swapped(self._module), full_parameters(self._kind, self._root, named.values(), writeback=False):
            for n, p in self._named(self._module).items():
                value = full_value(p)
                if rank0:
                    out[n] = value.detach().float().cpu().clone()
        return out

    @torch.no_grad()
    def on_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if not self.shadow or step < self.start_step or step % self.update_every:
            return
        self.update(pl_module)

    @torch.no_grad()
    def update(self, pl_module: L.LightningModule) -> None:
        """One EMA step on the weights as this rank holds them (its slices when sharded)."""
        decay = self.current_decay()
        for name, p in self._params(pl_module).items():
            self.shadow[name].lerp_(p.detach().float(), 1.0 - decay)
        self.num_updates += 1

    @contextlib.contextmanager
    def swapped(self, pl_module: L.LightningModule) -> Iterator[None]:
        """Run a block with the EMA weights in the network, then restore the trained ones."""
        if not self.shadow or self._backup is not None:
            yield
            return
        params = self._params(pl_module)
        self._backup = {n: p.detach().clone() for n, p in params.items()}
        try:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(self.shadow[n])
            yield
        finally:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(self._backup[n])
            self._backup = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.validate_with_ema and trainer.state.fn == "fit":
            self._ctx = self.swapped(pl_module)
            self._ctx.__enter__()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ctx = getattr(self, "_ctx", None)
        if ctx is not None:
            ctx.__exit__(None, None, None)
            self._ctx = None

    def state_dict(self) -> dict[str, Any]:
        if not self.shadow:  # nothing averaged: no EMA state, so exports use the raw weights
            return {}
        return {
            "shadow": self.full_shadow(),
            "num_updates": self.num_updates,
            "attr": self.attr,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.shadow = dict(state_dict["shadow"])
        self.num_updates = int(state_dict["num_updates"])
        self._restored_full = True  # full tensors: placed (and sliced, when sharded) by _localise
        if self._module is not None and self._kind is None:
            self._localise(self._module)


def find_ema(trainer: L.Trainer) -> EMA | None:
    return next((cb for cb in trainer.callbacks if isinstance(cb, EMA)), None)
