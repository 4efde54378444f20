"""PSNR and SSIM: the one definition the training modules, the evaluation scripts and the demos share.

Inputs are float tensors ``B x C x H x W`` with values in ``[0, data_range]`` (``[0, 1]`` for images
that are written as 8-bit files). Both are torchmetrics' functional definitions, so numbers match
torchmetrics' stateful metrics and published tables computed with it.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, per_image: bool = True) -> torch.Tensor:
    """PSNR in dB: one value per image (``B``), or with ``per_image=False`` one of the whole batch's MSE."""
    dim = tuple(range(1, pred.ndim)) if per_image else None
    reduction = "none" if per_image else "elementwise_mean"
    return peak_signal_noise_ratio(pred, target, data_range=data_range, reduction=reduction, dim=dim)


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """SSIM (Gaussian 11 x 11 window, sigma 1.5), one value per image (``B``)."""
    return structural_similarity_index_measure(pred, target, data_range=data_range, reduction="none")
