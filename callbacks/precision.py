"""Sampling inside training callbacks runs under the trainer's own autocast.

Under ``bf16-mixed`` / ``16-mixed`` the module keeps its frozen VAE and text encoder in that dtype while the
UNet holds fp32 weights; outside the training step nothing casts between them, so a grid or an eval pass
would mix dtypes (and crash). The precision plugin's forward context is the autocast the training step
runs under (a no-op at 32-bit).
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import lightning as L


def training_autocast(trainer: L.Trainer) -> AbstractContextManager:
    return trainer.precision_plugin.forward_context()
