"""Diffusion training objective pieces: targets, min-SNR weighting, offset noise."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler


def snr(scheduler: DDPMScheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at each timestep."""
    alphas_cumprod = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    return alphas_cumprod / (1.0 - alphas_cumprod)


def min_snr_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor, gamma: float | None) -> torch.Tensor:
    """Per-sample loss weights of Min-SNR-gamma (Hang et al. 2023); ones when ``gamma`` is None.

    For epsilon targets the weight is min(snr, gamma) / snr; for v targets min(snr, gamma) / (snr + 1).
    """
    if gamma is None:
        return torch.ones_like(timesteps, dtype=torch.float32)
    s = snr(scheduler, timesteps)
    clipped = torch.clamp(s, max=gamma)
    if scheduler.config.prediction_type == "v_prediction":
        return clipped / (s + 1.0)
    return clipped / s


def sample_noise(latents: torch.Tensor, offset: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian noise, plus a per-channel constant ("offset noise") so the model can shift image means."""
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    if offset:
        shift = torch.randn((*latents.shape[:2], 1, 1), generator=generator, device=latents.device, dtype=latents.dtype)
        noise = noise + offset * shift
    return noise


def diffusion_target(
    scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the UNet must predict under the scheduler's prediction type."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction_type {kind!r} (use epsilon or v_prediction)")
