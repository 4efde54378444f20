"""The 9-channel inpainting UNet and the two extra inputs it takes (mask, masked-image latent).

Channel order is the published Text2Earth-inpainting / SD2-inpainting one: ``[noisy latent (4),
mask at latent size (1), masked-image latent (4)]``. Training (the module's ``predict`` hook) and
the inpaint pipeline both build those inputs with :func:`mask_and_masked_latents` and concatenate
them with :func:`inpaint_model_input`, so the two can never disagree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel

LATENT_CHANNELS = 4
INPAINT_IN_CHANNELS = 9  # noisy latent + mask + masked-image latent


def is_inpainting_unet(unet: UNet2DConditionModel) -> bool:
    return unet.config.in_channels == INPAINT_IN_CHANNELS


def inpainting_unet_from(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """A 9-channel copy of a text-to-image UNet: all weights copied, the 5 new input channels zero.

    With zero weights on mask and masked latent the copy predicts exactly what the source predicts,
    so training starts from the text-to-image model instead of from noise. The level embedding
    (``class_embedding``) is copied with everything else.
    """
    if is_inpainting_unet(unet):
        raise ValueError("UNet already has 9 input channels")
    if unet.config.in_channels != LATENT_CHANNELS:
        raise ValueError(f"expected a text-to-image UNet with 4 input channels, got {unet.config.in_channels}")
    config = dict(unet.config)
    config["in_channels"] = INPAINT_IN_CHANNELS
    new = UNet2DConditionModel.from_config(config)
    state = unet.state_dict()
    old_weight = state.pop("conv_in.weight")
    missing, unexpected = new.load_state_dict(state, strict=False)
    if unexpected or missing != ["conv_in.weight"]:
        raise RuntimeError(f"unexpected weight mismatch: missing={missing} unexpected={unexpected}")
    with torch.no_grad():
        weight = torch.zeros_like(new.conv_in.weight)
        weight[:, :LATENT_CHANNELS] = old_weight
        new.conv_in.weight.copy_(weight)
    return new.to(dtype=unet.dtype)


@torch.no_grad()
def mask_and_masked_latents(
    vae: AutoencoderKL,
    pixels: torch.Tensor,
    mask: torch.Tensor,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The mask at latent size and the scaled latent of the masked image, as the published pipeline makes them.

    ``pixels`` (B,3,H,W) in [-1, 1]; ``mask`` (B,1,H,W) in [0, 1], 1 = repaint. The mask channel gets
    the *soft* mask, resized with nearest neighbours like diffusers; the masked image keeps pixels
    where ``mask < 0.5`` (zero, i.e. mid-grey, elsewhere). The latent is a sample of the VAE's
    posterior (``generator``) times the scaling factor.
    """
    masked = pixels * (mask < 0.5).to(pixels.dtype)
    masked = masked.to(device=vae.device, dtype=vae.dtype)
    if isinstance(generator, list):  # one generator per image, encoded one by one as diffusers does
        latents = torch.cat(
            [vae.encode(masked[i : i + 1]).latent_dist.sample(generator=generator[i]) for i in range(len(masked))]
        )
    else:
        latents = vae.encode(masked).latent_dist.sample(generator=generator)
    latents = latents * vae.config.scaling_factor
    mask_latent = F.interpolate(mask.to(latents.dtype), size=latents.shape[-2:])
    return mask_latent.to(latents.device), latents


def inpaint_model_input(latents: torch.Tensor, mask_latent: torch.Tensor, masked_latents: torch.Tensor) -> torch.Tensor:
    """``[latents, mask, masked latents]`` along channels, the extra inputs repeated per guidance branch.

    ``latents`` may hold several guidance branches stacked along the batch (branch-major, as the
    sampling loop stacks them); mask and masked latents hold one row per image.
    """
    repeats = latents.shape[0] // mask_latent.shape[0]
    if repeats * mask_latent.shape[0] != latents.shape[0]:
        raise ValueError(f"batch of {latents.shape[0]} latents does not match {mask_latent.shape[0]} masks")
    extra = torch.cat([mask_latent, masked_latents], dim=1).to(latents.dtype)
    return torch.cat([latents, extra.repeat(repeats, 1, 1, 1)], dim=1)
