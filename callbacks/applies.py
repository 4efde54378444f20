"""When a callback applies to a module, so that callback sets stay the same for every task."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.utilities import rank_zero_warn


def is_text_to_image(pl_module: Any) -> bool:
    """A plain text-to-image latent diffusion module: what the sample grid and eval metrics generate with.

    Not an inpainting UNet (9 input channels), a LoRA adapter or a ControlNet translator (their exports
    are not text-to-image models), nor a module without a UNet (autoencoder, enhancement).
    """
    if getattr(pl_module, "unet", None) is None:
        return False
    hparams = getattr(pl_module, "hparams", {})
    return (
        not getattr(pl_module, "is_inpainting", False)
        and getattr(pl_module, "controlnet", None) is None
        and not hparams.get("lora")
    )


def holds_full_weights(trainer: Any) -> bool:
    """Every rank holds whole weights (DDP, one device). Under FSDP / ZeRO-3 each rank holds slices, so the
    callbacks that sample on rank 0 alone (sample grid, eval metrics) cannot call the UNet: they switch off,
    with one warning, rather than hang or crash (see the README's sharded-training section)."""
    from text2earth.training.sharding import sharding_kind

    return sharding_kind(trainer.strategy) is None


def samples_on_rank_zero(trainer: Any, pl_module: Any, what: str) -> bool:
    """Whether a callback that samples with the module's UNet on rank 0 alone (``what``: sample grid, eval
    metrics) runs: a text-to-image module whose weights every rank holds whole. Sharded weights get one
    warning instead of a hang or a crash."""
    if not is_text_to_image(pl_module):
        return False
    if holds_full_weights(trainer):
        return True
    rank_zero_warn(f"{what} off: the strategy shards the UNet's weights (sample and evaluate the export instead)")
    return False
