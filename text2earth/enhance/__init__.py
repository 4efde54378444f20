"""Visual quality enhancement of training images: RRDBNet x2 (BasicSR-compatible), training, folder/shard CLI.

Modules: ``rrdbnet`` (network, checkpoint loading/saving), ``tiling`` (tiled inference), ``degradations``
(synthetic training pairs), ``module`` (LightningModule), ``batch`` (folder and shard processing), ``imagefiles``
(format-preserving image files), ``cli`` (``text2earth enhance``), ``evaluate`` (bicubic vs network).
Nothing is imported here, so that registering the CLI subcommand does not load torch.
"""
