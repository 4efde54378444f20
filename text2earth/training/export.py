"""Turn a training checkpoint into a diffusers folder in the published layout (EMA weights)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from text2earth.core.errors import UserError
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
    if use_ema:
        shadow = ema_weights_from_checkpoint(checkpoint)
        if shadow is None:
            raise ValueError("checkpoint has no EMA weights; export with --no-ema to use the raw weights")
        params = dict(module.unet.named_parameters())
        with torch.no_grad():
            for name, value in shadow.items():
                params[name].copy_(value)
    return module.eval()


# --dtype of `text2earth export`: the weights' dtype and the diffusers variant their files are named by.
EXPORT_DTYPES = {"fp32": (None, None), "fp16": (torch.float16, "fp16"), "bf16": (torch.bfloat16, "bf16")}


def export_checkpoint(
    checkpoint_path: str | Path, out_dir: str | Path, use_ema: bool = True, dtype: str = "fp32"
) -> Path:
    """Write ``out_dir`` (safetensors, model_index.json) atomically: a temporary folder, then a rename.

    ``dtype`` ``fp16``/``bf16`` writes ``*.fp16.safetensors``/``*.bf16.safetensors``: load them with
    ``from_pretrained(folder, torch_dtype=..., variant="fp16")``.
    """
    if dtype not in EXPORT_DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(EXPORT_DTYPES)}, got {dtype!r}")
    checkpoint = load_checkpoint(checkpoint_path)
    return export_state(checkpoint, out_dir, use_ema=use_ema, dtype=dtype, source=str(checkpoint_path))


def export_state(
    checkpoint: dict[str, Any], out_dir: str | Path, use_ema: bool = True, dtype: str = "fp32", source: str = ""
) -> Path:
    """``export_checkpoint`` for a checkpoint held in memory (e.g. gathered from sharded ranks)."""
    torch_dtype, variant = EXPORT_DTYPES[dtype]
    module = module_from_checkpoint(checkpoint, use_ema=use_ema)
    out_dir = module.float().export(out_dir, dtype=torch_dtype, variant=variant)
    info = {"checkpoint": source, "global_step": checkpoint.get("global_step"), "ema": use_ema, "dtype": dtype}
    write_atomic(out_dir / "export.json", json.dumps(info, indent=2).encode())
    return out_dir
