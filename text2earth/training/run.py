"""Training entry point: compose the Hydra config, instantiate, fit. Nothing else lives here.

``text2earth train experiment=demo trainer.max_steps=100``; tests call :func:`train` on a composed config.
``ckpt_path=last`` resumes from the newest checkpoint of the run folder (an error when there is none);
``ckpt_path=last_or_none`` is a plain start when there is none yet, so a launch command (SLURM requeue, a
restarted ``torchrun``) is the same on every launch.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
import zipfile
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

from text2earth.core.config import without_hydra
from text2earth.core.errors import UserError
from text2earth.core.verbosity import quiet_lightning, trainer_console_options
from text2earth.io.shards import expand_shards
from text2earth.training.export import check_checkpoint_file

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


RESUME_IF_ANY = "last_or_none"
"""``ckpt_path`` of launch commands that run unchanged on every (re)launch (SLURM requeue, torchrun restart):
the newest checkpoint when there is one, else a fresh start. ``last`` insists that there is one."""


def _resumable(root_dir: Path, checkpoint_dirs: list[tuple[Path, bool]]) -> list[Path]:
    """Whole checkpoints of a run, any of which holds everything a resume needs.

    ``checkpoint_dirs``: (dirpath, step files keep the optimizer) per checkpoint callback. Step files count
    when they keep the optimizer: a kill after a step file but before ``last.ckpt`` then loses nothing.
    A torn file (a save killed mid-write; Lightning's own ``hpc_ckpt`` is not written atomically) is skipped.
    """
    found = list(root_dir.glob("hpc_ckpt_*.ckpt"))
    for dirpath, step_files in checkpoint_dirs:
        found += dirpath.glob("*.ckpt" if step_files else "last*.ckpt")  # never a half-written NAME.ckpt.tmp
    whole = [p for p in found if zipfile.is_zipfile(p)]
    for torn in set(found) - set(whole):
        log.warning("skipping %s: not a whole checkpoint (an interrupted save)", torn)
    return whole


def check_before_training(cfg: DictConfig) -> None:
    """What can be checked before the run folder is made and anything loads: the checkpoint to resume from,
    and shard patterns that match nothing (except those of the embedded folder, built when missing)."""
    check_resume(cfg)
    data = cfg.get("data") or {}
    build = data.get("build_embedded_if_missing")
    for key in ("train_shards", "val_shards"):
        spec = data.get(key)
        if spec is None or (build and str(spec).startswith(str(build))):
            continue
        expand_shards(OmegaConf.to_object(spec) if isinstance(spec, ListConfig) else spec)


def check_resume(cfg: DictConfig) -> None:
    """Before the run folder is made: an explicit ``ckpt_path`` is a whole checkpoint, and ``last`` has one."""
    ckpt_path = cfg.get("ckpt_path")
    if not ckpt_path or str(ckpt_path) == RESUME_IF_ANY:
        return
    if str(ckpt_path) != "last":
        check_checkpoint_file(ckpt_path)
        return
    callbacks = [c for c in (cfg.get("callbacks") or {}).values() if c is not None and c.get("dirpath")]
    dirs = [(Path(c.dirpath), bool(c.get("optimizer_in_step_files", False))) for c in callbacks]
    if not _resumable(Path(cfg.paths.output_dir), dirs):
        raise UserError(
            f"ckpt_path=last: nothing to resume in {cfg.paths.output_dir} (no whole checkpoint there yet); "
            f"drop ckpt_path to start, or use ckpt_path={RESUME_IF_ANY} to start fresh when there is none"
        )


def resolve_ckpt_path(ckpt_path: str | None, trainer: L.Trainer) -> str | None:
    """The checkpoint ``trainer.fit`` resumes from: a path as given (a whole checkpoint file), or for ``last`` /
    ``last_or_none`` the newest whole checkpoint of the run folder: the checkpoint callbacks' ``last*.ckpt`` (and
    step files that keep the optimizer) and ``hpc_ckpt_*.ckpt`` (what Lightning's SLURM environment saves on the
    requeue signal, which Lightning itself only looks for when ``ckpt_path`` is unset). With none, ``last`` is a
    :class:`UserError` and ``last_or_none`` a fresh start (``None``).
    """
    if not ckpt_path:
        return None
    if str(ckpt_path) not in ("last", RESUME_IF_ANY):
        return str(check_checkpoint_file(ckpt_path))
    dirs = [
        (Path(cb.dirpath), bool(getattr(cb, "optimizer_in_step_files", False)))
        for cb in trainer.checkpoint_callbacks
        if getattr(cb, "dirpath", None)
    ]
    candidates = _resumable(Path(trainer.default_root_dir), dirs)
    if not candidates:
        if str(ckpt_path) == "last":
            raise UserError(f"ckpt_path=last: nothing to resume in {trainer.default_root_dir}")
        log.info("ckpt_path=%s: no checkpoint in %s yet, starting from scratch", ckpt_path, trainer.default_root_dir)
        return None
    newest = max(candidates, key=lambda p: p.stat().st_mtime)
    log.info("ckpt_path=%s: resuming from %s", ckpt_path, newest)
    return str(newest)


def hardware_description(trainer: L.Trainer) -> str:
    """What the run trained on, for recipes and READMEs."""
    if trainer.strategy.root_device.type == "cuda":
        name = torch.cuda.get_device_name(trainer.strategy.root_device)
        return f"{trainer.world_size} x {name}"
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
