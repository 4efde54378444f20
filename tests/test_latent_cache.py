"""Latent cache round trip on real tiles: cached latents equal the VAE path and feed training."""

import torch

from data_modules.latent_cache import cache_latents
from data_modules.webdataset_datamodule import ShardDataModule
from text2earth.models.components import build_from_preset


def test_cached_latents_match_the_vae_and_train(embedded_shards, tmp_path):
    vae = build_from_preset("tiny").vae.eval()
    vae.save_pretrained(tmp_path / "vae")
    counts = cache_latents(f"{embedded_shards}/val-*.tar", tmp_path / "vae", tmp_path / "cache", progress=False)
    assert counts["skipped"] == 0 and counts["samples"] > 600

    dm = ShardDataModule(f"{tmp_path}/cache/val-*.tar", f"{tmp_path}/cache/val-*.tar", batch_size=8, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["latents"].shape == (8, 4, 16, 16)
    with torch.no_grad():
        direct = vae.encode(batch["pixel_values"]).latent_dist.mean * vae.config.scaling_factor
        # fp16 storage: equal to half precision
        torch.testing.assert_close(batch["latents"], direct, rtol=2e-3, atol=2e-3)
        decoded_cached = vae.decode(batch["latents"] / vae.config.scaling_factor).sample
        decoded_direct = vae.decode(direct / vae.config.scaling_factor).sample
    assert (decoded_cached - decoded_direct).abs().max() < 1e-2
