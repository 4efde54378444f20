"""Training entry point: compose the Hydra config, instantiate, fit. Nothing else lives here.

``text2earth train experiment=demo trainer.max_steps=100``; tests call :func:`train` on a composed config.
``ckpt_path=last`` resumes from the newest checkpoint of the run folder and is a plain start when there is
none yet, so a launch command (SLURM requeue, a restarted ``torchrun``) is the same on every launch.
"""

from __future__ import annotations

import json
import logging
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

from text2earth.core.config import without_hydra
from text2earth.core.errors import UserError
from text2earth.core.verbosity import quiet_lightning, trainer_console_options

log = logging.getLogger(__name__)


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
    quiet_lightning()
    console = trainer_console_options(cfg.trainer)
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **console)
    # The run's own config, without Hydra's runtime node (not resolvable outside @hydra.main).
    run_config = OmegaConf.to_container(without_hydra(cfg), resolve=True)
    for logger in loggers:
        logger.log_hyperparams(run_config)
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg.get("ckpt_path"), trainer))
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


def resolve_ckpt_path(ckpt_path: str | None, trainer: L.Trainer) -> str | None:
    """The checkpoint ``trainer.fit`` resumes from: a path as given, or for ``last`` the newest of the run
    folder's ``last*.ckpt`` (the checkpoint callbacks') and ``hpc_ckpt_*.ckpt`` (what Lightning's SLURM
    environment saves on the requeue signal, which Lightning itself only looks for when ``ckpt_path`` is unset);
    ``None`` (a fresh start) when there is none yet. A missing explicit path is a :class:`UserError`.
    """
    if not ckpt_path:
        return None
    if str(ckpt_path) != "last":
        if not Path(ckpt_path).is_file():
            raise UserError(f"ckpt_path: no checkpoint at {ckpt_path} (use ckpt_path=last to resume this run folder)")
        return str(ckpt_path)
    candidates = list(Path(trainer.default_root_dir).glob("hpc_ckpt_*.ckpt"))
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "dirpath", None):
            candidates += Path(callback.dirpath).glob("last*.ckpt")  # never a half-written NAME.ckpt.tmp
    if not candidates:
        log.info("ckpt_path=last: no checkpoint in %s yet, starting from scratch", trainer.default_root_dir)
        return None
    newest = max(candidates, key=lambda p: p.stat().st_mtime)
    log.info("ckpt_path=last: resuming from %s", newest)
    return str(newest)


def hardware_description(trainer: L.Trainer) -> str:
    """What the run trained on, for recipes and READMEs."""
    if trainer.strategy.root_device.type == "cuda":
        name = torch.cuda.get_device_name(trainer.strategy.root_device)
        return f"{trainer.world_size} x {name}"
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
