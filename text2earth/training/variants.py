"""The task variants of ``LatentDiffusionModule``, from its optional ``lora:`` / ``controlnet:`` config blocks.

- ``lora: {modality, rank, alpha, target_modules}``: a LoRA adapter on the frozen UNet (text-to-NIR/PAN/SAR);
  exported as an adapter folder (:mod:`text2earth.models.lora`).
- ``controlnet: {task, conditioning_channels, folder, pairs_dir}``: a ControlNet beside the frozen UNet
  (translation); the batch carries ``conditioning`` (B, 3, H, W in [0, 1]); exported as a translator folder
  (:mod:`text2earth.models.controlnet`) that records the DN stretch of the pairs under ``pairs_dir``.
Only the variant's own weights require gradients, so the module's optimiser trains exactly those.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

from text2earth.io.bands import TASKS, check_modality, check_task
from text2earth.models.controlnet import build_controlnet, save_translator
from text2earth.models.lora import DEFAULT_TARGETS, add_lora, save_lora


def build_variant(
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    lora: dict[str, Any] | None,
    controlnet: dict[str, Any] | None,
) -> ControlNetModel | None:
    """Apply the configured variant to ``unet`` (in place); returns the ControlNet when there is one."""
    if lora and controlnet:
        raise ValueError("configure either a lora or a controlnet block, not both")
    if lora:
        check_modality(lora.get("modality", "rgb"))
        add_lora(
            unet,
            rank=int(lora.get("rank", 4)),
            alpha=lora.get("alpha"),
            target_modules=tuple(lora.get("target_modules") or DEFAULT_TARGETS),
        )
        return None
    if controlnet:
        check_task(controlnet["task"])
        net = build_controlnet(unet, vae, int(controlnet.get("conditioning_channels", 3)), controlnet.get("folder"))
        unet.requires_grad_(False)
        net.train()
        return net
    return None


def export_variant(module: Any, folder: str | Path) -> Path:
    """Write the adapter (LoRA) or translator (ControlNet) folder of a trained variant module."""
    hp = module.hparams
    base = hp.components.get("folder")
    if base:  # relative to the exported folder, so that the pair moves together
        base = os.path.relpath(Path(base).resolve(), Path(folder).resolve())
    step = int(module.trainer.global_step) if module._trainer is not None else None
    if module.controlnet is not None:
        task = hp.controlnet["task"]
        cond, target = TASKS[task]
        info = {"task": task, "condition": cond, "target": target, "base_model": base, "global_step": step}
        # The per-sensor DN stretch of the training pairs: what a 16-bit input of that sensor should use.
        pairs_dir = hp.controlnet.get("pairs_dir")
        report = Path(pairs_dir or "") / task / "pairs.json"
        if pairs_dir and report.is_file():
            info["training_stretch_dn"] = json.loads(report.read_text())["stretch_dn"]
        return save_translator(module.controlnet, folder, info)
    info = {"modality": hp.lora.get("modality", "rgb"), "base_model": base, "global_step": step, **dict(hp.lora)}
    return save_lora(module.unet, folder, info=info)
