"""AutoencoderModule: trains a small AutoencoderKL, the first stage of a from-scratch model.

The published model reuses SD2's VAE; a CPU-sized model has no such VAE, so the demo recipe trains
one (L1 + a small KL term on random crops, REFERENCE §8). Validation measures PSNR on whole tiles
and estimates the latent standard deviation, written as the VAE's ``scaling_factor`` on export so
diffusion sees unit-variance latents, as in Stable Diffusion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from text2earth.core.config import make_hparams_plain
from text2earth.core.image_metrics import psnr
from text2earth.io.files import atomic_directory
from text2earth.models.presets import get_preset
from text2earth.training.optim import configure_optimization


class AutoencoderModule(L.LightningModule):
    def __init__(
        self,
        optimizer: dict[str, Any],
        lr_scheduler: dict[str, Any] | None = None,
        preset: str = "tiny",
        overrides: dict[str, Any] | None = None,
        kl_weight: float = 1e-6,
        crop_size: int | None = 32,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        make_hparams_plain(self.hparams)
        self.vae = AutoencoderKL(**get_preset(preset, self.hparams.overrides)["vae"])
        self._latent_sq: list[torch.Tensor] = []

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        size = self.hparams.crop_size
        if not size or size >= x.shape[-1]:
            return x
        top, left = (int(v) for v in torch.randint(0, x.shape[-1] - size + 1, (2,)))
        return x[..., top : top + size, left : left + size]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x = self._crop(batch["pixel_values"])
        posterior = self.vae.encode(x).latent_dist
        recon = self.vae.decode(posterior.sample()).sample
        l1 = F.l1_loss(recon, x)
        kl = posterior.kl().mean()
        loss = l1 + self.hparams.kl_weight * kl
        self.log_dict({"train/l1": l1, "train/kl": kl, "train/loss": loss}, prog_bar=True, batch_size=len(x))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        x = batch["pixel_values"]
        latents = self.vae.encode(x).latent_dist.mode()
        recon = self.vae.decode(latents).sample.clamp(-1, 1)
        value = psnr((recon + 1) / 2, (x + 1) / 2, per_image=False)
        self.log("val/psnr", value, prog_bar=True, batch_size=len(x), sync_dist=True)
        self._latent_sq.append(latents.float().pow(2).mean().detach())

    def on_validation_epoch_end(self) -> None:
        if self._latent_sq:
            std = torch.stack(self._latent_sq).mean().sqrt()
            self.vae.register_to_config(scaling_factor=float(1.0 / std.clamp(min=1e-6)))
            self.log("val/latent_std", std, sync_dist=True)
            self._latent_sq.clear()

    def configure_optimizers(self) -> Any:
        return configure_optimization(self, self.vae.parameters(), self.hparams.optimizer, self.hparams.lr_scheduler)

    def export(self, folder: str | Path) -> Path:
        with atomic_directory(folder) as tmp:
            self.vae.save_pretrained(tmp, safe_serialization=True)
        return Path(folder)
