"""Exponential moving average of the trained network's weights, as a Lightning callback.

Correct under DDP: after each optimiser step every rank holds identical weights, so every rank
keeps an identical EMA; only rank 0 writes it, as part of the checkpoint (callback state).
Validation (and the sample logger, and export) run on the EMA weights by swapping them in.
Sharded strategies (FSDP, DeepSpeed ZeRO-3) hold only a slice of the weights per rank: there the
callback refuses to start instead of averaging slices silently. A network with no trainable weights
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

    def _params(self, pl_module: L.LightningModule) -> dict[str, torch.nn.Parameter]:
        net = getattr(pl_module, self.attr)
        return {name: p for name, p in net.named_parameters() if p.requires_grad}

    def current_decay(self) -> float:
        # Warm-up as in diffusers' EMAModel: early averages forget the random init quickly.
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        strategy = type(trainer.strategy).__name__
        if "FSDP" in strategy or ("DeepSpeed" in strategy and getattr(trainer.strategy, "zero_stage_3", False)):
            raise RuntimeError(f"EMA callback does not support sharded weights ({strategy}); disable callbacks.ema")
        params = self._params(pl_module)
        if not self.shadow:
            self.shadow = {n: p.detach().float().clone() for n, p in params.items()}
        else:  # restored from a checkpoint: move to the module's device
            self.shadow = {n: t.to(params[n].device) for n, t in self.shadow.items()}

    @torch.no_grad()
    def on_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if not self.shadow or step < self.start_step or step % self.update_every:
            return
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
            "shadow": {n: t.cpu() for n, t in self.shadow.items()},
            "num_updates": self.num_updates,
            "attr": self.attr,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.shadow = dict(state_dict["shadow"])
        self.num_updates = int(state_dict["num_updates"])


def find_ema(trainer: L.Trainer) -> EMA | None:
    return next((cb for cb in trainer.callbacks if isinstance(cb, EMA)), None)
