"""ModelCheckpoint that never leaves a half-written checkpoint (write ``NAME.tmp``, then rename) and keeps
disk use bounded for a 1.3 B model: ``keep_last`` step files, and optimizer state only where resuming needs it.

At published scale one full checkpoint of the UNet (868 M parameters) is ~14 GB: fp32 weights (3.5 GB), AdamW's
two moments (6.9 GB) and the EMA copy (3.5 GB). Only ``last.ckpt`` is ever resumed from, so the older step
files can drop the optimizer moments (``optimizer_in_step_files: false``): 7 GB each, still holding the
weights and the EMA that export reads. README "Training at scale" has the arithmetic.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from text2earth.core.errors import UserError


class AtomicModelCheckpoint(ModelCheckpoint):
    def __init__(self, *args: Any, keep_last: int | None = None, optimizer_in_step_files: bool = True, **kwargs: Any):
        if keep_last is not None:
            if int(keep_last) < 1:
                raise UserError(
                    f"callbacks.model_checkpoint.keep_last must be >= 1 (or null for save_top_k), got {keep_last}"
                )
            # The newest k step files: "step" is one of ModelCheckpoint's own monitor candidates.
            kwargs.update(save_top_k=int(keep_last), monitor="step", mode="max")
        # A step file that exists again after a resume (the kill came after it, before last.ckpt) is
        # overwritten atomically, not duplicated as NAME-v1.ckpt.
        kwargs.setdefault("enable_version_counter", False)
        super().__init__(*args, **kwargs)
        self.keep_last = keep_last
        self.optimizer_in_step_files = optimizer_in_step_files
        self._saving_step_file = False

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        tmp = f"{filepath}.tmp"
        self._saving_step_file = not os.path.basename(filepath).startswith(self.CHECKPOINT_NAME_LAST)
        try:
            super()._save_checkpoint(trainer, tmp)
            if trainer.is_global_zero:
                os.replace(tmp, filepath)  # atomic on POSIX: a crash leaves the previous file intact
        except BaseException:
            if trainer.is_global_zero:  # a full disk or an error: no torn NAME.tmp left behind
                Path(tmp).unlink(missing_ok=True)
            raise
        finally:
            self._saving_step_file = False
        trainer.strategy.barrier("atomic_checkpoint")
        self._last_checkpoint_saved = filepath

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # A save killed mid-write leaves NAME.ckpt.tmp (never read: resume takes only whole files): remove it.
        if trainer.is_global_zero and self.dirpath and Path(self.dirpath).is_dir():
            for torn in Path(self.dirpath).glob("*.ckpt.tmp"):
                torn.unlink(missing_ok=True)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Called while the checkpoint dict is assembled: a step file (not last.ckpt) sheds the optimizer moments.
        if self._saving_step_file and not self.optimizer_in_step_files:
            checkpoint.pop("optimizer_states", None)
