"""Guiders: how many denoiser branches a sampling step runs and how their predictions combine.

Each guider is a small object (in the spirit of Stability's ``generative-models``): it says which
``(caption, level)`` condition every branch gets and how to merge the branch predictions. The
denoising loop in :mod:`text2earth.pipelines.sampling` knows nothing about guidance beyond that.

The null condition is the empty caption and level 0 ("unknown"), exactly the one used by condition
dropout in training (:func:`text2earth.models.conditioning.drop_conditions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import torch

from text2earth.core.resolution import UNKNOWN_LEVEL


class Branch(NamedTuple):
    """The conditions of one branch, one entry per prompt."""

    captions: list[str]
    levels: list[float]


@runtime_checkable
class Guider(Protocol):
    num_branches: int

    def branches(
        self, captions: Sequence[str], levels: Sequence[float], negative_prompts: Sequence[str] | None = None
    ) -> list[Branch]:
        """``num_branches`` branches, in the order the loop concatenates them."""
        ...

    def combine(self, predictions: Sequence[torch.Tensor]) -> torch.Tensor:
        """One prediction from the per-branch predictions (same order as :meth:`branches`)."""
        ...


def _negatives(captions: Sequence[str], negative_prompts: Sequence[str] | None) -> list[str]:
    if negative_prompts is None:
        return [""] * len(captions)
    if len(negative_prompts) != len(captions):
        raise ValueError(f"got {len(negative_prompts)} negative prompts for {len(captions)} prompts")
    return list(negative_prompts)


class ClassifierFreeGuidance:
    """The published Text2Earth guidance: ``eps = u + g * (c - u)``.

    Branches ``[uncond = (negative or "", level 0), cond = (caption, L)]``, unconditional first as
    diffusers' ``StableDiffusionPipeline`` concatenates ``[negative, positive]``. A scale <= 1 runs
    the conditional branch alone (as diffusers does: guidance is off, not merely weighted).
    """

    def __init__(self, scale: float = 4.0) -> None:
        self.scale = float(scale)
        self.num_branches = 2 if self.scale > 1.0 else 1

    def branches(
        self, captions: Sequence[str], levels: Sequence[float], negative_prompts: Sequence[str] | None = None
    ) -> list[Branch]:
        cond = Branch(list(captions), [float(v) for v in levels])
        if self.num_branches == 1:
            return [cond]
        uncond = Branch(_negatives(captions, negative_prompts), [UNKNOWN_LEVEL] * len(captions))
        return [uncond, cond]

    def combine(self, predictions: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.num_branches == 1:
            return predictions[0]
        uncond, cond = predictions
        return uncond + self.scale * (cond - uncond)

    def __repr__(self) -> str:
        return f"ClassifierFreeGuidance(scale={self.scale:g})"


class TextLevelGuidance:
    """Separate guidance strengths for the caption and for the resolution level.

    Branches ``u = (negative or "", 0)``, ``t = (caption, 0)``, ``c = (caption, L)`` and
    ``eps = u + g_t * (t - u) + g_l * (c - t)``. With ``g_t == g_l == g`` this is
    ``u + g * (c - u)``, i.e. :class:`ClassifierFreeGuidance` at one extra UNet call per step.
    """

    num_branches = 3

    def __init__(self, text_scale: float = 4.0, level_scale: float = 4.0) -> None:
        self.text_scale = float(text_scale)
        self.level_scale = float(level_scale)

    def branches(
        self, captions: Sequence[str], levels: Sequence[float], negative_prompts: Sequence[str] | None = None
    ) -> list[Branch]:
        n = len(captions)
        return [
            Branch(_negatives(captions, negative_prompts), [UNKNOWN_LEVEL] * n),
            Branch(list(captions), [UNKNOWN_LEVEL] * n),
            Branch(list(captions), [float(v) for v in levels]),
        ]

    def combine(self, predictions: Sequence[torch.Tensor]) -> torch.Tensor:
        uncond, text, cond = predictions
        return uncond + self.text_scale * (text - uncond) + self.level_scale * (cond - text)

    def __repr__(self) -> str:
        return f"TextLevelGuidance(text_scale={self.text_scale:g}, level_scale={self.level_scale:g})"


def make_guider(guidance_scale: float, level_guidance_scale: float | None = None) -> Guider:
    """:class:`ClassifierFreeGuidance` unless a separate level scale is asked for."""
    if level_guidance_scale is None:
        return ClassifierFreeGuidance(guidance_scale)
    return TextLevelGuidance(guidance_scale, level_guidance_scale)
