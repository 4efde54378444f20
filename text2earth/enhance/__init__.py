"""Visual quality enhancement of training images: RRDBNet x2 (BasicSR-compatible), training, folder/shard CLI."""

from text2earth.enhance.rrdbnet import RRDBConfig, RRDBNet, load_rrdbnet, save_rrdbnet
from text2earth.enhance.tiling import upscale

__all__ = ["RRDBConfig", "RRDBNet", "load_rrdbnet", "save_rrdbnet", "upscale"]
