"""Turn a training checkpoint into a diffusers folder in the published layout (EMA weights)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from text2earth.io.files import write_atomic
from text2earth.training.ema import ema_weights_from_checkpoint


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)


def module_from_checkpoint(checkpoint: dict[str, Any], use_ema: bool = True):
    """Rebuild the training module from a checkpoint's own hyper-parameters and load its weights."""
    from text2earth.training.module import LatentDiffusionModule

    hparams = checkpoint.get("hyper_parameters")
    if not hparams or "components" not in hparams:
        raise ValueError(
            "checkpoint has no LatentDiffusionModule hyper-parameters: was it written by `text2earth train`?"
        )
    module = LatentDiffusionModule(**hparams)
    module.load_state_dict(checkpoint["state_dict"], strict=hparams.get("save_frozen_in_checkpoint", True))
    module.on_load_checkpoint(checkpoint)  # what Lightning would restore beside the weights (level histogram)
    if use_ema:
        shadow = ema_weights_from_checkpoint(checkpoint)
        if shadow is None:
            raise ValueError("checkpoint has no EMA weights; export with --no-ema to use the raw weights")
        params = dict(module.unet.named_parameters())
        with torch.no_grad():
            for name, value in shadow.items():
                params[name].copy_(value)
    return module.eval()


def export_checkpoint(checkpoint_path: str | Path, out_dir: str | Path, use_ema: bool = True) -> Path:
    """Write ``out_dir`` (safetensors, model_index.json) atomically: a temporary folder, then a rename."""
    checkpoint = load_checkpoint(checkpoint_path)
    module = module_from_checkpoint(checkpoint, use_ema=use_ema)
    out_dir = module.float().export(out_dir)
    info = {"checkpoint": str(checkpoint_path), "global_step": checkpoint.get("global_step"), "ema": use_ema}
    write_atomic(out_dir / "export.json", json.dumps(info, indent=2).encode())
    return out_dir
