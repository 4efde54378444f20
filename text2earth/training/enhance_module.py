"""EnhanceModule: trains an RRDBNet on synthetic (degraded, clean) pairs with an L1 loss.

L1 is the PSNR-oriented stage of Real-ESRGAN (its "RealESRNet" checkpoints); no GAN or perceptual loss, so
the network restores rather than invents detail, which is what one wants before training a generator on the
result. EMA of the weights is the project's ``callbacks.ema.EMA`` (``attr: net``): validation then runs
on the EMA weights, and ``callbacks.export.ExportOnTrainEnd`` calls :meth:`EnhanceModule.export` with them.
Validation reports PSNR/SSIM of the network and of plain bicubic upsampling on the same pairs, quantised to
8 bits as written files would be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import WandbLogger

from text2earth.core.config import make_hparams_plain
from text2earth.core.image_metrics import psnr, ssim
from text2earth.io.images import labelled_grid, quantize_8bit, save_png
from text2earth.models.rrdbnet import RRDBNet, read_state_dict, save_rrdbnet
from text2earth.training.optim import configure_optimization


def bicubic(lq: torch.Tensor, scale: int) -> torch.Tensor:
    return F.interpolate(lq, scale_factor=scale, mode="bicubic", align_corners=False)


class EnhanceModule(L.LightningModule):
    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any],
        lr_scheduler: dict[str, Any] | None = None,
        pretrained: str | None = None,
        num_strip_samples: int = 6,
        strip_dir: str | None = None,
        channels_last: bool = True,
    ) -> None:
        """``net``: RRDBNet kwargs (scale, num_block, num_feat, num_grow_ch); ``optimizer``/``lr_scheduler``:
        Hydra configs instantiated in :meth:`configure_optimizers`; ``pretrained``: a BasicSR ``.pth`` or our
        ``.safetensors`` to start from (loaded strictly); ``strip_dir``: where before/after strips are written
        (default: the trainer's log folder); ``channels_last``: NHWC convolutions (measured 15-20% faster
        training steps on CPU for the small variant; the exported weights are ordinary contiguous tensors)."""
        super().__init__()
        self.save_hyperparameters()
        make_hparams_plain(self.hparams)
        self.net = RRDBNet(**self.hparams.net)
        if pretrained:
            self.net.load_state_dict(read_state_dict(pretrained)[0], strict=True)
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.scale = self.net.scale

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            lq = lq.contiguous(memory_format=torch.channels_last)
        return self.net(lq)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = F.l1_loss(self(batch["lq"]), batch["gt"])
        self.log("train/l1", loss, prog_bar=True, batch_size=len(batch["lq"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        lq, gt = batch["lq"], batch["gt"]
        # Quantised: the metrics describe the files that get written.
        sr, bic = quantize_8bit(self(lq)), quantize_8bit(bicubic(lq, self.scale))
        # Batch means weighted by batch size: the epoch value is the mean over all validation images.
        n = len(lq)
        self.log("val/psnr", psnr(sr, gt).mean(), prog_bar=True, batch_size=n, sync_dist=True)
        self.log("val/ssim", ssim(sr, gt).mean(), prog_bar=True, batch_size=n, sync_dist=True)
        self.log("val/psnr_bicubic", psnr(bic, gt).mean(), batch_size=n, sync_dist=True)
        self.log("val/ssim_bicubic", ssim(bic, gt).mean(), batch_size=n, sync_dist=True)
        if batch_idx == 0 and not self.trainer.sanity_checking and self.trainer.is_global_zero:
            self._log_strip(lq, bic, sr, gt)

    def _log_strip(self, lq: torch.Tensor, bic: torch.Tensor, sr: torch.Tensor, gt: torch.Tensor) -> None:
        """Columns = validation tiles; rows = input (nearest, to show its pixels), bicubic, network, target."""
        k = min(self.hparams.num_strip_samples, len(lq))
        nearest = F.interpolate(lq[:k], scale_factor=self.scale, mode="nearest")
        rows = [t[:k].float().cpu() for t in (nearest, bic, sr, gt)]
        grid = labelled_grid(rows, row_labels=["input", "bicubic", "RRDBNet", "target"], cell_size=128)
        folder = Path(self.hparams.strip_dir or self.trainer.log_dir or self.trainer.default_root_dir) / "strips"
        save_png(grid, folder / f"step_{self.global_step:07d}.png")
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                # No step=: Lightning's WandbLogger lets wandb count its own steps and records ours as
                # trainer/global_step; an explicit smaller step would make wandb drop the image.
                logger.experiment.log({"val/strip": wandb.Image(grid), "trainer/global_step": self.global_step})

    def configure_optimizers(self) -> Any:
        return configure_optimization(self, self.net.parameters(), self.hparams.optimizer, self.hparams.lr_scheduler)

    def export(self, folder: str | Path) -> Path:
        """Write the network (the EMA weights when called by ExportOnTrainEnd) as ``rrdbnet_x{scale}.safetensors``."""
        return save_rrdbnet(self.net, Path(folder) / f"rrdbnet_x{self.scale}.safetensors")
