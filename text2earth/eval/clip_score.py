"""CLIP score with a local CLIP or SigLIP folder (e.g. a Git-RSCLIP download), through torchmetrics.

torchmetrics' ``CLIPScore`` takes a callable returning ``(model, processor)``; ours loads both from the
folder with ``local_files_only`` (no hub). SigLIP models were trained on text padded to a fixed length
(64 tokens for Git-RSCLIP), so their processor is called with ``padding="max_length"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from torchmetrics.multimodal.clip_score import CLIPScore
from tqdm.auto import tqdm
from transformers import AutoModel, AutoProcessor

from text2earth.io.images import stack_uint8


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
        self.uses_text_mask = not model.config.model_type.startswith("siglip")

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


class FixedLengthText:
    """A processor whose text side pads to the model's trained length (SigLIP); images pass through."""

    def __init__(self, processor: Any, max_length: int) -> None:
        self.processor = processor
        self.max_length = max_length

    def __call__(self, text: Any = None, images: Any = None, **kwargs: Any) -> Any:
        if text is not None:
            kwargs.update(padding="max_length", max_length=self.max_length, truncation=True)
        processed = self.processor(text=text, images=images, **kwargs)
        if text is not None and "attention_mask" not in processed:  # torchmetrics reads it (unused for SigLIP)
            processed["attention_mask"] = torch.ones_like(processed["input_ids"])
        return processed


def load_clip(folder: str | Path, device: str | torch.device = "cpu") -> tuple[EmbeddingModel, Any]:
    """``(model, processor)`` of a local CLIP / SigLIP folder in the transformers layout; the model on ``device``."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"CLIP folder {str(folder)!r} has no config.json: download a CLIP or SigLIP model "
            "(e.g. Git-RSCLIP) to a local folder and give its path"
        )
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    if model.config.model_type.startswith("siglip"):
        processor = FixedLengthText(processor, model.config.text_config.max_position_embeddings)
    return EmbeddingModel(model, device), processor


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
