"""Which device and dtype inference runs in: the one rule every app, evaluation and pipeline uses."""

from __future__ import annotations

import torch

from text2earth.core.errors import UserError


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` checked against what this machine has; ``None``: CUDA when available, else the CPU."""
    if device is None or device == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UserError(f"unknown device {device!r} (cpu, cuda or cuda:N)") from exc
    if target.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device} was asked for but no CUDA device is available")
    return target


def inference_dtype(device: torch.device) -> torch.dtype | None:
    """Weights' dtype for sampling: bf16 on CUDA (the published model samples in half precision), fp32 else.

    ``None`` means "as stored" (fp32), which ``from_pretrained(torch_dtype=None)`` understands.
    """
    return torch.bfloat16 if device.type == "cuda" else None
