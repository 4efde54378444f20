"""ModelCheckpoint that never leaves a half-written checkpoint: write ``NAME.tmp``, then rename."""

from __future__ import annotations

import os

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class AtomicModelCheckpoint(ModelCheckpoint):
    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        tmp = f"{filepath}.tmp"
        super()._save_checkpoint(trainer, tmp)
        if trainer.is_global_zero:
            os.replace(tmp, filepath)  # atomic on POSIX: a crash leaves the previous file intact
        trainer.strategy.barrier("atomic_checkpoint")
        self._last_checkpoint_saved = filepath
