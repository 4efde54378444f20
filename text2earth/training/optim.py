"""Optimiser and per-step LR schedule from plain Hydra config: one recipe for every LightningModule here."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import hydra
import lightning as L
import torch


def configure_optimization(
    module: L.LightningModule,
    params: Iterable[torch.nn.Parameter],
    optimizer: dict[str, Any],
    lr_scheduler: dict[str, Any] | None,
) -> Any:
    """What ``configure_optimizers`` returns: the optimiser, with a per-step scheduler when configured.

    AdamW gets ``fused=True`` on CUDA unless the config says otherwise (one kernel per step); a scheduler's
    ``num_training_steps`` of null / -1 becomes the trainer's total number of optimiser steps.
    """
    opt_cfg = dict(optimizer)
    if opt_cfg.get("_target_", "").endswith("AdamW") and "fused" not in opt_cfg:
        opt_cfg["fused"] = module.device.type == "cuda"
    opt = hydra.utils.instantiate(opt_cfg, params=list(params))
    if not lr_scheduler:
        return opt
    sched_cfg = dict(lr_scheduler)
    if sched_cfg.get("num_training_steps") in (None, -1):
        sched_cfg["num_training_steps"] = int(module.trainer.estimated_stepping_batches)
    scheduler = hydra.utils.instantiate(sched_cfg, optimizer=opt)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
