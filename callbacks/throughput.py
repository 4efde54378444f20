"""Images-per-second of the training loop, logged as ``train/images_per_s`` every ``window`` optimizer steps."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch

from callbacks.steps import OptimizerStepCallback


class ImagesPerSecond(OptimizerStepCallback):
    """Counts the images of every micro-batch (all ranks) and reports once per ``window`` optimizer steps."""

    def __init__(self, window: int = 20) -> None:
        self.window = window
        self._t0: float | None = None
        self._images = 0
        self._steps = 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        super().on_train_batch_start(trainer, pl_module, *args)
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += len(batch["level"]) * trainer.world_size
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._steps += 1
        if self._steps >= self.window:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - self._t0
            pl_module.log("train/images_per_s", self._images / elapsed, prog_bar=True, rank_zero_only=True)
            self._t0, self._images, self._steps = time.perf_counter(), 0, 0
