"""Visual quality enhancement of training images with an RRDBNet x2 (network: ``text2earth.models.rrdbnet``;
LightningModule: ``text2earth.training.enhance_module``; CLI: ``text2earth.cli.enhance``).

Modules: ``tiling`` (tiled inference), ``degradations`` (synthetic training pairs), ``batch`` (folder and shard
processing), ``imagefiles`` (format-preserving image files). Nothing is imported here.
"""
