"""Content analysis and captions of a tile (content only: the resolution is a separate condition)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

# Per-pixel index thresholds (TOA reflectance) used for the fractions and the caption class.
NDWI_WATER = 0.0
SWIR_WATER = 0.015  # water absorbs SWIR; wet salt marsh (also NDWI > 0) does not, so SWIR separates them
NDVI_VEGETATION = 0.35
NDVI_DENSE = 0.55
NDVI_BARE = 0.2

CLASSES = ("water", "coastline", "river", "wetland", "forest", "cropland", "bare_soil", "partly_cloudy", "cloud")

_PHRASES: dict[str, list[str]] = {
    "water": [
        "open water",
        "a large body of open water",
        "calm open sea water",
        "open sea with no land in view",
        "a wide expanse of open water",
    ],
    "coastline": [
        "a coastline where land meets open water",
        "a coastline with a shallow lagoon",
        "the shore of a bay with open water",
        "a coastline with sandy shore and water",
        "land and open water along a coast",
    ],
    "river": [
        "a river winding through the land",
        "a small river and creeks crossing the land",
        "a meandering river through {land}",
        "narrow water channels cutting through {land}",
    ],
    "wetland": [
        "a salt marsh with winding tidal creeks",
        "coastal wetland crossed by tidal channels",
        "brown marshland with narrow water channels",
        "tidal marsh and creeks near the coast",
    ],
    "forest": [
        "dense green vegetation and forest",
        "a dense green forest canopy",
        "thick forest with dark green trees",
        "forested land with continuous tree cover",
        "dense woodland",
    ],
    "cropland": [
        "cropland fields",
        "a patchwork of farmland fields",
        "agricultural fields with patches of woodland",
        "rectangular farm fields, some green and some bare",
        "farmland with scattered trees",
    ],
    "bare_soil": [
        "bare soil",
        "bare brown fields",
        "bare ground with sparse vegetation",
        "ploughed fields of bare soil",
    ],
    "cloud": [
        "dense white cumulus clouds covering the ground",
        "a thick field of bright cumulus clouds",
        "bright white clouds hiding the land below",
        "an unbroken layer of puffy white clouds",
    ],
}
_GROUND_NOUNS = {
    "water": ["open water"],
    "coastline": ["the coast", "a coastline"],
    "river": ["land crossed by a river", "a river valley"],
    "wetland": ["marshland", "coastal wetland"],
    "forest": ["dense green forest", "forested land", "woodland"],
    "cropland": ["farmland", "cropland fields", "fields and woods"],
    "bare_soil": ["bare soil", "bare fields"],
}
_LAND_NOUNS = {"forest": "forest", "cropland": "farmland", "bare_soil": "bare fields", "wetland": "marshland"}
_CLOUD_PHRASES = {
    "few": ["a few scattered small clouds over", "small puffy clouds over", "scattered white clouds over"],
    "many": ["cumulus clouds over", "many white cumulus clouds over", "a field of cumulus clouds over"],
}


def pixel_indices(refl: dict[str, np.ndarray], cloud: np.ndarray) -> dict[str, np.ndarray]:
    """Per-pixel NDVI, NDWI, brightness and the class masks behind the fractions.

    Computed once per level (not per tile): overlapping tiles then only slice and average.
    """
    red, green, blue, nir = refl["red"], refl["green"], refl["blue"], refl["nir"]
    ndvi = (nir - red) / np.maximum(nir + red, 1e-6)
    ndwi = (green - nir) / np.maximum(green + nir, 1e-6)
    clear = cloud < 0.5
    wet = (ndwi > NDWI_WATER) & clear
    water = wet & (refl["swir"] < SWIR_WATER)
    land = clear & ~water
    return {
        "ndvi": ndvi.astype(np.float32),
        "ndwi": ndwi.astype(np.float32),
        "brightness": ((red + green + blue) / 3).astype(np.float32),
        "cloud": cloud.astype(np.float32),
        "clear": clear,
        "water": water,
        "wet": wet & ~water,
        "vegetation": (ndvi > NDVI_VEGETATION) & land,
        "dense_vegetation": (ndvi > NDVI_DENSE) & land,
        "bare": (ndvi < NDVI_BARE) & land,
    }


def classify(pixels: dict[str, np.ndarray]) -> dict[str, Any]:
    """Fractions, mean indices and the scene class of one tile from its ``pixel_indices`` slices."""
    mean = {k: float(v.mean()) for k, v in pixels.items()}
    fractions = {k: mean[k] for k in ("cloud", "water", "wet", "vegetation", "dense_vegetation", "bare")}
    # Ground class from the clear part of the tile (what a partly cloudy caption says is below).
    clear = max(mean["clear"], 1.0 / pixels["clear"].size)
    w, wet, d = mean["water"] / clear, mean["wet"] / clear, mean["dense_vegetation"] / clear
    bo = mean["bare"] / clear
    if w >= 0.9:
        ground = "water"
    elif w >= 0.4:
        ground = "coastline"
    elif wet >= 0.3:  # waterlogged land that is not open water: the salt marsh behind the barrier islands
        ground = "wetland"
    elif w >= 0.08:
        ground = "river"
    elif d >= 0.5:
        ground = "forest"
    elif bo >= 0.6:
        ground = "bare_soil"
    else:
        ground = "cropland"
    cloud = fractions["cloud"]
    scene_class = "cloud" if cloud >= 0.6 else "partly_cloudy" if cloud >= 0.1 else ground
    return {
        "fractions": {k: round(val, 4) for k, val in fractions.items()},
        "indices": {k: round(mean[k], 4) for k in ("ndvi", "ndwi", "brightness")},
        "scene_class": scene_class,
        "ground_class": ground,
        "land_class": "forest" if d >= 0.5 else "bare_soil" if bo >= 0.6 else "cropland",
    }


def analyse_tile(refl: dict[str, np.ndarray], cloud: np.ndarray) -> dict[str, Any]:
    """Fractions of cloud / water / vegetation / bare pixels and the scene class of one tile."""
    return classify(pixel_indices(refl, cloud))


def make_caption(info: dict[str, Any], rng: random.Random) -> str:
    """A short content caption from the analysis; never mentions size, scale or resolution."""
    scene_class, ground = info["scene_class"], info["ground_class"]
    land = _LAND_NOUNS.get(info["land_class"], "farmland")
    if scene_class == "partly_cloudy":
        amount = "many" if info["fractions"]["cloud"] >= 0.3 else "few"
        text = f"{rng.choice(_CLOUD_PHRASES[amount])} {rng.choice(_GROUND_NOUNS[ground])}"
    else:
        text = rng.choice(_PHRASES[scene_class]).format(land=land)
        fr = info["fractions"]
        # A secondary clause for what else is clearly present (seeded, so not every tile has one).
        if scene_class in ("forest", "cropland") and 0.02 <= fr["water"] < 0.08 and rng.random() < 0.7:
            text += rng.choice([" with a small stream", " with a few ponds", " with a narrow creek"])
        elif scene_class == "forest" and fr["bare"] >= 0.1 and rng.random() < 0.7:
            text += rng.choice([" with a few clearings", " with some bare patches", " and a few open fields"])
        elif scene_class == "coastline" and fr["dense_vegetation"] >= 0.1 and rng.random() < 0.7:
            text += rng.choice([" and green fields inland", " next to farmland", " with woods along the shore"])
    return text[0].upper() + text[1:] if rng.random() < 0.5 else text


def class_descriptions() -> dict[str, list[str]]:
    """The caption phrases of each scene class (what zero-shot prompts for these tiles should say).

    ``{land}`` is filled with "farmland"; a partly cloudy tile is described as clouds over each ground noun.
    """
    out = {name: [p.format(land=_LAND_NOUNS["cropland"]) for p in phrases] for name, phrases in _PHRASES.items()}
    grounds = [noun for nouns in _GROUND_NOUNS.values() for noun in nouns]
    out["partly_cloudy"] = [f"{c} {g}" for amount in ("few", "many") for c in _CLOUD_PHRASES[amount] for g in grounds]
    return {name: out[name] for name in CLASSES}
