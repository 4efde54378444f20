"""CLIP score with a local CLIP or SigLIP folder (e.g. a Git-RSCLIP download), through torchmetrics.

torchmetrics' ``CLIPScore`` takes a callable returning ``(model, processor)``; both come from the one loader of
image-text folders (:func:`text2earth.models.rsclip.load_image_text_model`, local files only): the folder's
image processor, text padded to the trained length (64 tokens for Git-RSCLIP) as published.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from torchmetrics.multimodal.clip_score import CLIPScore
from tqdm.auto import tqdm

from text2earth.io.images import stack_uint8, to_pil
from text2earth.models.rsclip import ImageTextModel, load_image_text_model, model_kind


class EmbeddingModel(torch.nn.Module):
    """The model as torchmetrics calls it: ``get_*_features`` returning embedding tensors.

    transformers 5 returns an output object whose ``pooler_output`` holds the projected embedding.
    SigLIP was trained without a text attention mask (fixed-length padding), so it gets none.
    """

    def __init__(self, model: Any, device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.model = model.to(device)
        self.config = model.config
        self.run_device = torch.device(device)
        self.uses_text_mask = model_kind(model) == "clip"

    def to(self, *args: Any, **kwargs: Any) -> EmbeddingModel:
        # torchmetrics moves the model to the device of the images it is given (the processor needs them
        # on the CPU); the model stays on its own device and the processed inputs go there instead.
        return self

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.model.get_image_features(pixel_values=pixel_values.to(self.run_device))
        return _embedding(features).float().cpu()

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = attention_mask.to(self.run_device) if self.uses_text_mask and attention_mask is not None else None
        features = self.model.get_text_features(input_ids=input_ids.to(self.run_device), attention_mask=mask)
        return _embedding(features).float().cpu()


def _embedding(output: Any) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class PublishedProcessor:
    """A processor with the loaded model's own preprocessing: the folder's image processor, text padded to the
    trained length (:class:`text2earth.models.rsclip.ImageTextModel`); torchmetrics' ``padding`` is ignored."""

    def __init__(self, loaded: ImageTextModel) -> None:
        self.loaded = loaded

    def __call__(self, text: Any = None, images: Any = None, **kwargs: Any) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if text is not None:
            out.update(self.loaded.tokenize([text] if isinstance(text, str) else list(text)))
            out.setdefault("attention_mask", torch.ones_like(out["input_ids"]))  # torchmetrics reads it
        if images is not None:
            out["pixel_values"] = self.loaded.preprocess([to_pil(image) for image in images])
        return out


def load_clip(folder: str | Path, device: str | torch.device = "cpu") -> tuple[EmbeddingModel, Any]:
    """``(model, processor)`` of a local CLIP / SigLIP folder (e.g. Git-RSCLIP), loaded as ``clip classify`` does;
    the model on ``device``."""
    loaded = load_image_text_model(folder)
    return EmbeddingModel(loaded.model, device), PublishedProcessor(loaded)


def clip_score(
    images: Sequence[PIL.Image.Image],
    captions: Sequence[str],
    folder: str | Path,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Mean CLIP score (100 x cosine, floored at 0) of each image with its own caption.

    ``images`` may be a lazy sequence (loaded per batch); the model runs on ``device``.
    """
    if len(images) != len(captions) or not images:
        raise ValueError(f"need one caption per image (got {len(images)} images, {len(captions)} captions)")
    model, processor = load_clip(folder, device)
    metric = CLIPScore(model_name_or_path=lambda: (model, processor))
    with torch.no_grad():
        for start in tqdm(range(0, len(images), batch_size), desc="CLIP score", unit="batch"):
            batch = stack_uint8(images[start : start + batch_size])
            metric.update(list(batch), list(captions[start : start + batch_size]))
        score = float(metric.compute())
    return {"clip_score": score, "n": len(images), "model": str(folder), "model_type": model.config.model_type}
