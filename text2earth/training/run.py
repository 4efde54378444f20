"""Training entry point: compose the Hydra config, instantiate, fit. Nothing else lives here.

``text2earth train experiment=demo trainer.max_steps=100``; tests call :func:`train` on a composed config.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf


def instantiate_dict(cfg: DictConfig | None) -> list[Any]:
    """Objects for every entry of a config group holding ``name: {_target_: ...}`` items (nulls skipped)."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(item) for item in cfg.values() if item is not None and "_target_" in item]


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit ``cfg.model`` on ``cfg.data``; return the final metrics and where things were written."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    callbacks = instantiate_dict(cfg.get("callbacks"))
    loggers = instantiate_dict(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    # The run's own config, without Hydra's runtime node (not resolvable outside @hydra.main).
    run_config = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    for logger in loggers:
        logger.log_hyperparams(run_config)
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    summary = {
        "task_name": cfg.get("task_name"),
        "global_step": trainer.global_step,
        "wall_s": round(time.perf_counter() - start, 1),
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
        "hardware": hardware_description(trainer),
        "overrides": list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [],
    }
    output_dir = Path(cfg.paths.output_dir)
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "run_summary.json").write_text(json.dumps(summary, indent=2))
    return {**summary, "output_dir": str(output_dir), "trainer": trainer, "model": model}


def hardware_description(trainer: L.Trainer) -> str:
    """What the run trained on, for recipes and READMEs."""
    if trainer.strategy.root_device.type == "cuda":
        name = torch.cuda.get_device_name(trainer.strategy.root_device)
        return f"{trainer.world_size} x {name}"
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
