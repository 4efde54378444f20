"""Haze by the atmospheric scattering model (Koschmieder): ``I = J * t + A * (1 - t)``.

``J`` is the clear image in ``[0, 1]``, ``t`` the transmission (here one value per image, as for a
uniform haze layer over a small tile) and ``A`` the airlight (one grey level). With ``t`` and ``A`` known
the model inverts exactly: ``J = (I - A * (1 - t)) / t``. Training pairs draw ``t`` and ``A`` at random
per tile, reproducibly from a seed and the tile key.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Ranges of the random haze: thin to thick (t down to 0.4 keeps 40 % of the ground signal), bright airlight.
TRANSMISSION_RANGE = (0.4, 0.85)
AIRLIGHT_RANGE = (0.7, 1.0)


@dataclass(frozen=True)
class Haze:
    transmission: float
    airlight: float

    def __post_init__(self) -> None:
        if not 0.0 < self.transmission <= 1.0:
            raise ValueError(f"transmission must be in (0, 1], got {self.transmission}")
        if not 0.0 <= self.airlight <= 1.0:
            raise ValueError(f"airlight must be in [0, 1], got {self.airlight}")


def add_haze(clear: np.ndarray, haze: Haze) -> np.ndarray:
    """The hazy image of a clear float image in ``[0, 1]``."""
    return np.asarray(clear, dtype=np.float32) * haze.transmission + haze.airlight * (1.0 - haze.transmission)


def remove_haze(hazy: np.ndarray, haze: Haze) -> np.ndarray:
    """The exact inverse of :func:`add_haze` for the same parameters (not clipped)."""
    return (np.asarray(hazy, dtype=np.float32) - haze.airlight * (1.0 - haze.transmission)) / haze.transmission


def random_haze(rng: np.random.Generator) -> Haze:
    """Transmission and airlight drawn uniformly from their ranges."""
    return Haze(float(rng.uniform(*TRANSMISSION_RANGE)), float(rng.uniform(*AIRLIGHT_RANGE)))
