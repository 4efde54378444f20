"""RsclipModule: image-text contrastive training (SigLIP sigmoid loss) on the ``ShardDataModule`` batches.

The model is a transformers ``SiglipModel`` or ``CLIPModel``: fine-tuned from a local folder (Git-RSCLIP) or
built from the ``tiny`` preset (CPU). Temperature and bias are learnable; a fresh model starts at SigLIP's
``log 10`` and ``-10``, a folder keeps its own. The batch's ``pixel_values`` are in [-1, 1], which is the
published normalisation (mean/std 0.5); they are resized to the model's input size when the data differ.
Negatives come from every rank (:func:`text2earth.models.contrastive.sigmoid_loss`). The export is a folder
that ``SiglipModel`` / ``CLIPModel.from_pretrained`` load with nothing of this package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from text2earth.core.config import make_hparams_plain
from text2earth.core.errors import UserError
from text2earth.models.contrastive import sigmoid_loss
from text2earth.models.rsclip import (
    BIAS_FILE,
    SIGLIP_INIT_LOGIT_BIAS,
    SIGLIP_INIT_LOGIT_SCALE,
    build_tiny,
    image_embeddings,
    model_kind,
    save_image_text_folder,
    text_embeddings,
)
from text2earth.training.optim import configure_optimization


def _load_model(preset: str | None, folder: str | None, seed: int) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoTokenizer, CLIPModel, SiglipModel

    from text2earth.models.tokenizer import load_clip_tokenizer

    if folder:
        path = Path(folder)
        if not (path / "config.json").is_file():
            raise UserError(f"model.folder {folder!r} is not a SiglipModel / CLIPModel folder (no config.json)")
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        if config.model_type not in ("siglip", "clip"):
            raise UserError(f"model.folder {folder!r} holds a {config.model_type!r} model, not siglip or clip")
        model_class = SiglipModel if config.model_type == "siglip" else CLIPModel
        model = model_class.from_pretrained(path, local_files_only=True)
        return model.train(), AutoTokenizer.from_pretrained(path, local_files_only=True)
    if preset != "tiny":
        raise UserError(f"model.preset: unknown image-text preset {preset!r} (known: tiny; or give model.folder)")
    return build_tiny(seed=seed), load_clip_tokenizer()


class RsclipModule(L.LightningModule):
    def __init__(
        self,
        optimizer: dict[str, Any],
        lr_scheduler: dict[str, Any] | None = None,
        preset: str | None = "tiny",
        folder: str | None = None,
        gradient_checkpointing: bool = False,
        cross_rank_negatives: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        make_hparams_plain(self.hparams)
        self.model, self.tokenizer = _load_model(preset, folder, seed)
        self.kind = model_kind(self.model)
        if self.kind == "clip":
            # CLIPModel has no bias; SigLIP's learnable bias lives here (exported beside the weights).
            self.logit_bias = torch.nn.Parameter(torch.tensor([SIGLIP_INIT_LOGIT_BIAS]))
            bias_file = Path(folder) / BIAS_FILE if folder else None
            if bias_file is not None and bias_file.is_file():  # a CLIPModel trained here before
                self.logit_bias.data.fill_(float(json.loads(bias_file.read_text())["logit_bias"]))
        if not folder:
            with torch.no_grad():
                self.model.logit_scale.fill_(SIGLIP_INIT_LOGIT_SCALE)
                self.bias_parameter().fill_(SIGLIP_INIT_LOGIT_BIAS)
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.text_length = int(self.model.config.text_config.max_position_embeddings)
        self.image_size = int(self.model.config.vision_config.image_size)

    def bias_parameter(self) -> torch.nn.Parameter:
        return self.model.logit_bias if self.kind == "siglip" else self.logit_bias

    # -- forward ----------------------------------------------------------------------------------
    def tokenize(self, captions: list[str]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(
            captions, padding="max_length", max_length=self.text_length, truncation=True, return_tensors="pt"
        )
        out = {"input_ids": tokens["input_ids"].to(self.device)}
        if self.kind == "clip" and "attention_mask" in tokens:  # SigLIP was trained without a text mask
            out["attention_mask"] = tokens["attention_mask"].to(self.device)
        return out

    def embed(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = batch["pixel_values"]
        if pixels.shape[-1] != self.image_size or pixels.shape[-2] != self.image_size:
            pixels = F.interpolate(pixels, size=(self.image_size,) * 2, mode="bicubic", antialias=True)
        images = image_embeddings(self.model, pixels.contiguous())
        texts = text_embeddings(self.model, **self.tokenize(list(batch["caption"])))
        return images, texts

    def loss(self, batch: dict[str, Any], cross_rank: bool) -> tuple[torch.Tensor, torch.Tensor]:
        images, texts = self.embed(batch)
        loss = sigmoid_loss(images.float(), texts.float(), self.model.logit_scale, self.bias_parameter(), cross_rank)
        # In-batch image -> text top-1 (a cheap progress signal; local batch).
        accuracy = ((images @ texts.t()).argmax(dim=1) == torch.arange(len(images), device=images.device)).float()
        return loss, accuracy.mean()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, accuracy = self.loss(batch, cross_rank=self.hparams.cross_rank_negatives)
        n = len(batch["caption"])
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/i2t_top1", accuracy, batch_size=n)
        self.log("train/temperature", self.model.logit_scale.exp().detach(), batch_size=n)
        self.log("train/bias", self.bias_parameter().detach().squeeze(), batch_size=n)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, accuracy = self.loss(batch, cross_rank=False)
        n = len(batch["caption"])
        self.log("val/loss", loss, prog_bar=True, batch_size=n, sync_dist=True)
        self.log("val/i2t_top1", accuracy, batch_size=n, sync_dist=True)
        return loss

    def configure_optimizers(self) -> Any:
        return configure_optimization(self, self.parameters(), self.hparams.optimizer, self.hparams.lr_scheduler)

    # -- export -----------------------------------------------------------------------------------
    def export(self, folder: str | Path) -> Path:
        """A ``SiglipModel`` / ``CLIPModel`` folder (safetensors, tokenizer, image processor) at ``folder``."""
        bias = float(self.logit_bias.detach()) if self.kind == "clip" else None
        self.model.float()
        return save_image_text_folder(self.model, self.tokenizer, folder, logit_bias=bias)
