"""Image-text models (Git-RSCLIP / SigLIP, CLIP): load a local folder, preprocess as published, score pairs.

Git-RSCLIP is a transformers ``SiglipModel`` folder: 256 px input normalised with mean/std 0.5, text padded to
64 tokens (``padding="max_length"``) and given without an attention mask, probabilities
``sigmoid(logits_per_image)``. Any ``SiglipModel`` or ``CLIPModel`` folder loads here the same way: the
folder's own tokenizer and image processor, its own text length. A ``CLIPModel`` trained with the sigmoid loss
(the shipped tiny model) keeps its learned bias in ``sigmoid_bias.json`` beside the weights: ``CLIPModel`` has
no bias parameter, and ``from_pretrained`` ignores the extra file.

:func:`build_tiny` is the CPU-sized preset: a ``CLIPModel`` whose text tower has the exact configuration of
the tiny text-to-image preset's text encoder, so a trained tower can replace that encoder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL.Image
import torch
import torch.nn.functional as F

from text2earth.core.errors import UserError
from text2earth.io.files import atomic_directory
from text2earth.models.presets import get_preset

PUBLISHED_MEAN_STD = 0.5
SIGLIP_INIT_LOGIT_SCALE = math.log(10.0)  # temperature t' = log 10, as SigLIP initialises it
SIGLIP_INIT_LOGIT_BIAS = -10.0
BIAS_FILE = "sigmoid_bias.json"
MODEL_TYPES = ("siglip", "clip")


def model_kind(model: Any) -> str:
    """``"siglip"`` or ``"clip"`` for a transformers model (``siglip2`` counts as siglip)."""
    model_type = model.config.model_type
    return "siglip" if model_type.startswith("siglip") else "clip"


def tiny_config(image_size: int = 64) -> Any:
    """The tiny ``CLIPConfig``: the tiny preset's text encoder + a 4-layer ViT with 8-px patches."""
    from transformers import CLIPConfig

    text = dict(get_preset("tiny")["text_encoder"])
    vision = {
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "image_size": image_size,
        "patch_size": 8,
        "projection_dim": text["projection_dim"],
    }
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=text["projection_dim"])


def image_processor_for(kind: str, image_size: int) -> Any:
    """The published preprocessing at ``image_size``: resize (bicubic) to a square, /255, mean/std 0.5, no crop."""
    from transformers import CLIPImageProcessorPil, SiglipImageProcessorPil

    mean_std = {"image_mean": [PUBLISHED_MEAN_STD] * 3, "image_std": [PUBLISHED_MEAN_STD] * 3}
    if kind == "siglip":
        return SiglipImageProcessorPil(size={"height": image_size, "width": image_size}, **mean_std)
    return CLIPImageProcessorPil(size={"height": image_size, "width": image_size}, do_center_crop=False, **mean_std)


@dataclass
class ImageTextModel:
    """A loaded image-text model with its tokenizer and image processor, as one scoring object."""

    model: Any
    tokenizer: Any
    image_processor: Any
    logit_bias_value: float | None = None  # CLIPModel trained with the sigmoid loss; None: plain CLIP

    @property
    def kind(self) -> str:
        return model_kind(self.model)

    @property
    def text_length(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids padded to the model's trained length (SigLIP: no attention mask, as it was trained)."""
        tokens = self.tokenizer(
            list(texts), padding="max_length", max_length=self.text_length, truncation=True, return_tensors="pt"
        )
        out = {"input_ids": tokens["input_ids"]}
        if self.kind == "clip" and "attention_mask" in tokens:
            out["attention_mask"] = tokens["attention_mask"]
        return out

    def preprocess(self, images: Sequence[PIL.Image.Image]) -> torch.Tensor:
        """``pixel_values`` (N,3,S,S) of RGB images, with the folder's own image processor."""
        return self.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]

    @torch.no_grad()
    def embed_images(self, images: Sequence[PIL.Image.Image], batch_size: int = 64) -> torch.Tensor:
        """L2-normalised image embeddings (N, D) on the CPU."""
        out = []
        for start in range(0, len(images), batch_size):
            pixels = self.preprocess(images[start : start + batch_size]).to(self.device)
            out.append(image_embeddings(self.model, pixels).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised text embeddings (N, D) on the CPU."""
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = {k: v.to(self.device) for k, v in self.tokenize(texts[start : start + batch_size]).items()}
            out.append(text_embeddings(self.model, **tokens).float().cpu())
        return torch.cat(out)

    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.detach().float().cpu()

    def logit_bias(self) -> torch.Tensor:
        if hasattr(self.model, "logit_bias"):
            return self.model.logit_bias.detach().float().cpu()
        return torch.tensor([self.logit_bias_value or 0.0])

    def logits(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """``logits_per_image`` as the model's own forward computes them (scale x cosine [+ bias])."""
        return pair_logits(image_embeds, text_embeds, self.logit_scale(), self.logit_bias())

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """SigLIP / sigmoid-trained: ``sigmoid(logits)`` per pair; plain CLIP: softmax over the texts."""
        if self.kind == "siglip" or self.logit_bias_value is not None:
            return torch.sigmoid(logits)
        return logits.softmax(dim=-1)


def _embedding(output: Any) -> torch.Tensor:
    # transformers 5 returns an output object whose pooler_output is the projected embedding.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def image_embeddings(model: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    return F.normalize(_embedding(model.get_image_features(pixel_values=pixel_values)), dim=-1)


def text_embeddings(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    return F.normalize(_embedding(model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)), dim=-1)


def pair_logits(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor
) -> torch.Tensor:
    """``exp(scale) * <image, text> + bias`` for every pair: (n_images, n_texts)."""
    return image_embeds @ text_embeds.t() * logit_scale.exp() + logit_bias


def load_image_text_model(folder: str | Path, device: str | torch.device = "cpu") -> ImageTextModel:
    """A local ``SiglipModel`` / ``CLIPModel`` folder (Git-RSCLIP, or one exported by this package).

    Bad folders fail here, before any image is read, with one line that says what is missing.
    """
    from transformers import AutoConfig, AutoTokenizer, CLIPModel, SiglipModel

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"model folder {str(folder)!r} does not exist (give a local Git-RSCLIP / SigLIP / CLIP folder)")
    if not (folder / "config.json").is_file():
        raise UserError(
            f"model folder {str(folder)!r} has no config.json: it is not a transformers SiglipModel / CLIPModel folder"
        )
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    if config.model_type not in MODEL_TYPES:
        raise UserError(
            f"model folder {str(folder)!r} holds a {config.model_type!r} model; expected an image-text model "
            "(siglip or clip, e.g. Git-RSCLIP)"
        )
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise UserError(f"model folder {str(folder)!r} has no weights (*.safetensors)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"model folder {str(folder)!r}: cannot load its tokenizer ({exc})") from None
    model_class = SiglipModel if config.model_type == "siglip" else CLIPModel
    model = model_class.from_pretrained(folder, local_files_only=True).eval().to(device)
    image_size = int(config.vision_config.image_size)
    # Published folders hold preprocessor_config.json; processors saved by transformers 5 hold processor_config.json.
    if any((folder / name).is_file() for name in ("preprocessor_config.json", "processor_config.json")):
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    else:
        processor = image_processor_for(config.model_type, image_size)
    bias = None
    if (folder / BIAS_FILE).is_file():
        bias = float(json.loads((folder / BIAS_FILE).read_text())["logit_bias"])
    return ImageTextModel(model, tokenizer, processor, bias)


def build_tiny(seed: int = 0, image_size: int = 64) -> Any:
    """A fresh tiny ``CLIPModel`` (random weights from ``seed``) with SigLIP's temperature initialisation."""
    from transformers import CLIPModel

    torch.manual_seed(seed)
    model = CLIPModel(tiny_config(image_size))
    with torch.no_grad():
        model.logit_scale.fill_(SIGLIP_INIT_LOGIT_SCALE)
    return model


def save_image_text_folder(model: Any, tokenizer: Any, out_dir: str | Path, logit_bias: float | None = None) -> Path:
    """Write a folder ``SiglipModel`` / ``CLIPModel.from_pretrained`` and this module's loader read (atomically).

    The image processor written is the published preprocessing at the model's own input size.
    """
    kind = model_kind(model)
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        image_processor_for(kind, int(model.config.vision_config.image_size)).save_pretrained(tmp)
        if kind == "clip" and logit_bias is not None:
            (tmp / BIAS_FILE).write_text(json.dumps({"logit_bias": float(logit_bias)}) + "\n")
    return Path(out_dir)
