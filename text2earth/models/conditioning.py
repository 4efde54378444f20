"""Conditioning shared by training and sampling: caption encoding, level class labels, dropout.

Training and every pipeline call these, so the null condition (empty caption, level 0) and the
level scaling exist exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import CLIPTextModel, CLIPTokenizer

from text2earth.core.resolution import UNKNOWN_LEVEL


def tokenize(tokenizer: CLIPTokenizer, captions: Sequence[str]) -> torch.Tensor:
    """Token ids padded/truncated to the tokenizer's length, as the published pipeline does."""
    return tokenizer(
        list(captions),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


@torch.no_grad()
def encode_text(
    text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, captions: Sequence[str], device: torch.device | None = None
) -> torch.Tensor:
    """Last hidden state of the text encoder (SD2 / Text2Earth use no attention mask)."""
    return encode_ids(text_encoder, tokenize(tokenizer, captions).to(device or text_encoder.device))


@torch.no_grad()
def encode_ids(text_encoder: CLIPTextModel, input_ids: torch.Tensor) -> torch.Tensor:
    """Last hidden state for ids already tokenised (e.g. in the DataLoader workers)."""
    return text_encoder(input_ids)[0]


def level_class_labels(levels: torch.Tensor | Sequence[float], level_scale: float = 1.0) -> torch.Tensor:
    """What the UNet receives as ``class_labels``: the (fractional) level times ``level_scale``.

    Float, like the timestep, as the published pipeline passes it. Level 0 stays 0 for any scale.
    """
    levels = torch.as_tensor(levels, dtype=torch.float32)
    return levels * float(level_scale)


def drop_conditions(
    captions: Sequence[str],
    levels: torch.Tensor,
    p_text: float,
    p_level: float,
    generator: torch.Generator | None = None,
) -> tuple[list[str], torch.Tensor]:
    """Drop caption and level *independently* (Text2Earth's dynamic condition adaptation).

    A dropped caption becomes the empty prompt and a dropped level becomes 0 ("unknown"): the
    same null conditions classifier-free guidance uses at sampling time.
    """
    n = len(captions)
    drop_text = torch.rand(n, generator=generator) < p_text
    drop_level = torch.rand(n, generator=generator) < p_level
    captions = ["" if drop else caption for caption, drop in zip(captions, drop_text.tolist(), strict=True)]
    levels = torch.where(drop_level.to(levels.device), torch.full_like(levels, UNKNOWN_LEVEL), levels)
    return captions, levels
