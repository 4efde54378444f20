"""Config composition (Hydra Compose API) for the entry points, code and tests, and the ``t2e.*`` resolvers."""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from text2earth.core.paths import conf_dir, project_root, shipped


def _register_resolvers() -> None:
    """``${t2e.root:}`` (the project root, not the cwd) and ``${t2e.weights:demo}`` (a shipped folder)."""
    if not OmegaConf.has_resolver("t2e.root"):
        OmegaConf.register_new_resolver("t2e.root", lambda: str(project_root()))
    if not OmegaConf.has_resolver("t2e.weights"):
        OmegaConf.register_new_resolver("t2e.weights", lambda name: str(shipped(name)))


_register_resolvers()


def compose_config(
    config_name: str = "train", overrides: list[str] | None = None, output_dir: str | Path | None = None
) -> DictConfig:
    """Compose a config as ``@hydra.main`` would (Compose API), without running an app.

    The run folder is ``output_dir`` when given, else ``hydra.run.dir`` resolved once here (so DDP ranks
    that Lightning relaunches with ``hydra.run.dir=...`` land in the same folder). Hydra's own errors
    (unknown group option, bad override syntax, missing key) are raised as they come: see
    :func:`text2earth.cli.hydra_runner.run_config` for the one-line form.
    """
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides or []), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.cwd = os.getcwd()
        if output_dir is None:
            output_dir = OmegaConf.select(cfg, "hydra.run.dir")
        output_dir = str(Path(output_dir).resolve())
        cfg.hydra.runtime.output_dir = output_dir
        cfg.hydra.run.dir = output_dir
        cfg.hydra.job.name = cfg.hydra.job.name or config_name
        cfg.hydra.job.num = 0  # a single run, as @hydra.main sets them outside a sweep
        cfg.hydra.job.id = "0"
    HydraConfig.instance().set_config(cfg)
    return cfg


def without_hydra(cfg: DictConfig) -> DictConfig:
    """The run's own config: everything but Hydra's runtime node (which resolves only inside a Hydra run)."""
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


def to_plain(cfg: Any) -> Any:
    """Plain dicts/lists for OmegaConf nodes (resolved), anything else unchanged."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def make_hparams_plain(hparams: MutableMapping[str, Any]) -> None:
    """Turn a LightningModule's saved hyper-parameters into plain containers, in place.

    Checkpoints then hold no OmegaConf objects and load with ``torch.load(weights_only=True)``.
    Call right after ``self.save_hyperparameters()``.
    """
    for key in list(hparams):
        hparams[key] = to_plain(hparams[key])
