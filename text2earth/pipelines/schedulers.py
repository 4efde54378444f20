"""Sampler selection by name.

Every sampler is rebuilt with ``from_config`` from the model's own scheduler config, so the
training noise schedule (betas, ``prediction_type``, timestep spacing) stays that of the model
and only the integration method changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
)

DEFAULT_SCHEDULER = "euler"

# name -> class; the published Text2Earth demo samples with Euler, 50 steps.
SCHEDULERS: dict[str, type] = {
    "euler": EulerDiscreteScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
    "ddim": DDIMScheduler,
    "dpmpp_2m": DPMSolverMultistepScheduler,
    "ddpm": DDPMScheduler,
}

# Settings that make a class the sampler its name promises (DPM-Solver's default is already
# "dpmsolver++", pinned so a folder config saying otherwise cannot turn it into another method).
_NAME_KWARGS: dict[str, dict[str, Any]] = {
    "dpmpp_2m": {"algorithm_type": "dpmsolver++", "solver_order": 2},
}


def make_scheduler(name: str, config: Mapping[str, Any]) -> Any:
    """Scheduler ``name`` (see :data:`SCHEDULERS`) built from a base scheduler ``config``.

    ``config`` is a scheduler's ``.config`` or a plain dict such as ``presets.SCHEDULER``; keys
    the target class does not know are ignored by ``from_config``.
    """
    key = name.lower().strip() if isinstance(name, str) else name
    if key not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}")
    # Drop the source class's bookkeeping so from_config does not warn about a class mismatch.
    base = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    return SCHEDULERS[key].from_config(base, **_NAME_KWARGS.get(key, {}))
