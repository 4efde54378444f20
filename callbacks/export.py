"""Export the trained model (EMA weights when an EMA callback is present) at the end of training."""

from __future__ import annotations

from typing import Any

import lightning as L

from callbacks.applies import holds_full_weights
from callbacks.ema import find_ema
from text2earth.training.export import export_state


class ExportOnTrainEnd(L.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ema = find_ema(trainer)
        if holds_full_weights(trainer):
            if trainer.is_global_zero:
                if ema is None:
                    path = pl_module.export(self.out_dir)
                else:
                    with ema.swapped(pl_module):
                        path = pl_module.export(self.out_dir)
                print(f"exported {type(pl_module).__name__} to {path}")
            return
        # Sharded weights (FSDP, ZeRO-3): rank 0 alone cannot read them. Every rank joins the gathers a
        # checkpoint makes (weights, EMA); rank 0 exports from what they return, as `text2earth export` does.
        state: dict[str, Any] = {
            "state_dict": trainer.strategy.lightning_module_state_dict(),
            "hyper_parameters": dict(pl_module.hparams),
            "global_step": trainer.global_step,
        }
        if ema is not None:
            state["callbacks"] = {"EMA": ema.state_dict()}
        if trainer.is_global_zero:
            pl_module.on_save_checkpoint(state)  # the frozen parts' source weights, as in a checkpoint
            path = export_state(state, self.out_dir, use_ema=ema is not None, source="sharded weights at train end")
            print(f"exported {type(pl_module).__name__} to {path} (gathered from the sharded weights)")
        trainer.strategy.barrier("export")
