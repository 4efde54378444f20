"""Where the Hydra configs live, and config composition for code and tests."""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

# conf/ sits at the repository root (the project is installed editable, see README).
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def compose_config(
    config_name: str = "train", overrides: list[str] | None = None, output_dir: str | None = None
) -> DictConfig:
    """Compose a config as ``@hydra.main`` would, without running an app (tests, notebooks).

    ``output_dir`` fixes the run folder (what ``hydra.runtime.output_dir`` resolves to).
    """
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides or [], return_hydra_config=True)
    with open_dict(cfg):
        if output_dir is not None:
            cfg.hydra.runtime.output_dir = str(output_dir)
            Path(output_dir).mkdir(parents=True, exist_ok=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


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
