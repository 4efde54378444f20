"""Turn a training checkpoint into a diffusers folder in the published layout (EMA weights)."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from text2earth.core.errors import UserError
from text2earth.io.files import write_atomic
from text2earth.training.ema import ema_weights_from_checkpoint


def check_checkpoint_file(path: str | Path) -> Path:
    """``path`` if it is a whole checkpoint file; else a one-line :class:`UserError` saying what it is.

    Cheap (no load): a torch checkpoint is a zip archive whose directory is written last, so a truncated
    one (a killed save, a partial copy) has none.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"checkpoint {str(path)!r} is a folder, not a checkpoint file (name its .ckpt)")
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist")
    if not zipfile.is_zipfile(path):
        with path.open("rb") as f:
            zip_start = f.read(4) == b"PK\x03\x04"
        what = "truncated (an interrupted save or copy)" if zip_start else "not a checkpoint written by torch"
        raise UserError(f"checkpoint {str(path)!r} is {what}")
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = check_checkpoint_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError) as exc:
        reason = " ".join(str(exc).split())[:120]
        raise UserError(f"checkpoint {str(path)!r} cannot be read ({reason})") from None


def module_from_checkpoint(checkpoint: dict[str, Any], use_ema: bool = True):
    """Rebuild the training module from a checkpoint's own hyper-parameters and load its weights."""
    from text2earth.training.module import LatentDiffusionModule

    hparams = checkpoint.get("hyper_parameters")
    if not hparams or "components" not in hparams:
        raise UserError(
            "this checkpoint holds no text-to-image model settings: export takes a checkpoint written by "
            "`text2earth train` (RUN/checkpoints/last.ckpt)"
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
