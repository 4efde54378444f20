"""Export the trained model (EMA weights when an EMA callback is present) at the end of training."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from callbacks.ema import find_ema


class ExportOnTrainEnd(L.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    @rank_zero_only
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ema = find_ema(trainer)
        if ema is None:
            path = pl_module.export(self.out_dir)
        else:
            with ema.swapped(pl_module):
                path = pl_module.export(self.out_dir)
        print(f"exported {type(pl_module).__name__} to {path}")
