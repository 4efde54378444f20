"""``data/skipped_samples``: corrupt or malformed samples the DataModule skipped so far, as a metric."""

from __future__ import annotations

from typing import Any

import lightning as L


class SkippedSamples(L.Callback):
    """Logs the DataModule's ``skipped_samples`` (all DataLoader workers of this rank) every ``every_n_steps``."""

    def __init__(self, every_n_steps: int = 50) -> None:
        self.every_n_steps = every_n_steps

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        count = getattr(trainer.datamodule, "skipped_samples", None)
        if count is not None and trainer.global_step % self.every_n_steps == 0:
            pl_module.log("data/skipped_samples", float(count), reduce_fx="sum", sync_dist=False)
