"""Where a checkpoint keeps the EMA weights (the ``callbacks.ema.EMA`` callback's state), for export."""

from __future__ import annotations

from typing import Any

import torch


def ema_weights_from_checkpoint(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The EMA shadow stored in a Lightning checkpoint's callback states, if any."""
    for key, state in checkpoint.get("callbacks", {}).items():
        if key.startswith("EMA") and "shadow" in state:
            return state["shadow"]
    return None
