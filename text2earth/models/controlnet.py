"""ControlNet on the frozen Text2Earth UNet: building it, the controlled network call, and translator folders.

``ControlNetModel.from_unet`` copies the UNet's encoder, time embedding *and* zoom-level class embedding;
the level goes to both nets as ``class_labels``. Its conditioning embedding must downsample an image-sized
condition to latent size, so it gets one stride-2 convolution per factor of 2 of the VAE (3 for the 8x
published VAE, 2 for the 4x tiny one). The zero-initialised output convolutions make a fresh ControlNet add
exactly zero: training starts from the text-to-image model's own prediction.

A translator folder holds ``controlnet/`` (diffusers layout, safetensors) and ``translate.json`` (task,
condition / target modality, the base model folder, the condition's DN stretch for 16-bit inputs).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

from text2earth.io.files import atomic_directory, write_atomic

EMBEDDING_CHANNELS = (16, 32, 96, 256, 256)


def vae_factor(vae: AutoencoderKL) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def build_controlnet(
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    conditioning_channels: int = 3,
    folder: str | Path | None = None,
) -> ControlNetModel:
    """A ControlNet initialised from ``unet`` (or loaded from ``folder``), its embedding matched to the VAE."""
    strides = int(math.log2(vae_factor(vae)))
    if folder is not None:
        net = ControlNetModel.from_pretrained(Path(folder), local_files_only=True)
    else:
        net = ControlNetModel.from_unet(
            unet,
            conditioning_embedding_out_channels=EMBEDDING_CHANNELS[: strides + 1],
            conditioning_channels=conditioning_channels,
        )
    have = len(net.config.conditioning_embedding_out_channels) - 1
    if have != strides:
        raise ValueError(f"ControlNet downsamples its condition {2**have}x but the VAE {2**strides}x")
    return net


def controlled_prediction(
    unet: UNet2DConditionModel,
    controlnet: ControlNetModel,
    sample: torch.Tensor,
    timesteps: torch.Tensor,
    text: torch.Tensor,
    class_labels: torch.Tensor,
    condition: torch.Tensor,
    conditioning_scale: float = 1.0,
) -> torch.Tensor:
    """The UNet's output with the ControlNet's residuals added; the level reaches both as ``class_labels``.

    ``condition`` is the image in ``[0, 1]`` (B, 3, H, W) at the output image's size, as diffusers'
    ControlNet pipelines feed it. The one implementation of the controlled call (training and sampling).
    """
    down, mid = controlnet(
        sample,
        timesteps,
        encoder_hidden_states=text,
        controlnet_cond=condition.to(device=sample.device, dtype=controlnet.dtype),
        conditioning_scale=conditioning_scale,
        class_labels=class_labels,
        return_dict=False,
    )
    return unet(
        sample,
        timesteps,
        encoder_hidden_states=text,
        class_labels=class_labels,
        down_block_additional_residuals=down,
        mid_block_additional_residual=mid,
        return_dict=False,
    )[0]


def save_translator(controlnet: ControlNetModel, folder: str | Path, info: dict[str, Any]) -> Path:
    """Write ``folder/controlnet`` (safetensors) and ``folder/translate.json``, atomically."""
    with atomic_directory(folder) as tmp:
        controlnet.save_pretrained(tmp / "controlnet", safe_serialization=True)
        write_atomic(tmp / "translate.json", json.dumps(info, indent=2).encode())
    return Path(folder)


def read_translator(folder: str | Path) -> dict[str, Any]:
    """``translate.json`` of a translator folder; one-line errors for anything missing."""
    path = Path(folder)
    if not (path / "translate.json").is_file() or not (path / "controlnet" / "config.json").is_file():
        raise FileNotFoundError(f"{str(path)!r} is not a translator folder (controlnet/ and translate.json)")
    return json.loads((path / "translate.json").read_text())
