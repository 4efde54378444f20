"""Callbacks that act once per *optimizer* step, not once per micro-batch.

With ``accumulate_grad_batches=k`` Lightning calls ``on_train_batch_end`` k times per optimizer step while
``trainer.global_step`` (which counts optimizer steps) moves once: a callback keyed on batch ends would
update an EMA k times (decay^k) or draw the same grid k times. ``global_step`` moving between a batch's
start and end is the one signal that an optimizer step happened.
"""

from __future__ import annotations

from typing import Any

import lightning as L


class OptimizerStepCallback(L.Callback):
    """Calls :meth:`on_optimizer_step` after every optimizer step (``trainer.global_step`` is its count)."""

    _step_at_batch_start: int | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._step_at_batch_start = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        start = self._step_at_batch_start
        if start is not None and trainer.global_step > start:
            self.on_optimizer_step(trainer, pl_module)

    def on_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Override: runs once per optimizer step, after it (``trainer.global_step`` already counts it)."""
