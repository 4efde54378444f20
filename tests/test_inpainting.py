"""Inpainting: the 9-channel UNet, training masks, the edit pipeline against the published procedure."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from oracles import published_guided_euler

from text2earth import Text2EarthInpaintPipeline
from text2earth.core.config import compose_config
from text2earth.core.paths import shipped
from text2earth.models.components import ModelFolderError, build_components, build_from_preset
from text2earth.models.inpainting import inpainting_unet_from
from text2earth.models.masks import MaskGenerator
from text2earth.pipelines.text2img import Text2EarthPipeline
from text2earth.training.module import LatentDiffusionModule
from text2earth.training.run import train

SIZE = 32  # pixels; tiny VAE is 4x down
STEPS = 3
CAPTION = "a small lake surrounded by farmland"


def real_image(real_batch, index: int = 0) -> PIL.Image.Image:
    """A real embedded tile (64 px) cropped to SIZE, as a PIL image."""
    pixels = real_batch["pixel_values"][index, :, :SIZE, :SIZE]
    array = ((pixels.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    return PIL.Image.fromarray(array)


def soft_mask() -> PIL.Image.Image:
    """A soft mask: a white square fading out, so values between 0 and 1 reach the mask channel."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    distance = np.maximum(abs(x - 20), abs(y - 14))
    values = np.clip(1.0 - (distance - 6) / 6, 0, 1)
    return PIL.Image.fromarray((values * 255).round().astype(np.uint8), mode="L")


@pytest.fixture(scope="module")
def inpaint_components():
    """Tiny components with a 9-channel UNet whose extra channels are *not* zero (so they matter)."""
    parts = build_from_preset("tiny", seed=0)
    parts.unet = inpainting_unet_from(parts.unet)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(1)
        parts.unet.conv_in.weight[:, 4:].normal_(0, 0.3)
    return parts


@pytest.fixture(scope="module")
def pipe(inpaint_components):
    pipe = Text2EarthInpaintPipeline.from_components(inpaint_components, scheduler="euler")
    pipe.set_progress_bar_config(disable=True)
    return pipe


# -- the 9-channel UNet -----------------------------------------------------------------------------
def test_zero_init_unet_predicts_like_the_text_to_image_unet(tiny_components):
    unet = tiny_components.unet
    inpaint = inpainting_unet_from(unet)
    assert inpaint.config.in_channels == 9 and inpaint.config.class_embed_type == "timestep"
    torch.testing.assert_close(inpaint.class_embedding.linear_1.weight, unet.class_embedding.linear_1.weight)
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=g)
    text = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
    t, labels = torch.tensor([10, 700]), torch.tensor([0.0, 1350.0])
    with torch.no_grad():
        expected = unet(latents, t, encoder_hidden_states=text, class_labels=labels).sample
        zeros = torch.cat([latents, torch.zeros(2, 5, 8, 8)], dim=1)
        got = inpaint(zeros, t, encoder_hidden_states=text, class_labels=labels).sample
        # zero weights: any mask / masked latent is ignored at step 0
        other = torch.cat([latents, torch.rand(2, 1, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)], 1)
        got_other = inpaint(other, t, encoder_hidden_states=text, class_labels=labels).sample
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(got_other, expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="already has 9"):
        inpainting_unet_from(inpaint)


# -- training masks ---------------------------------------------------------------------------------
def test_mask_generator_coverage_statistics():
    masks = MaskGenerator(p_full=0.2)(500, 32, 32, torch.Generator().manual_seed(0))
    assert masks.shape == (500, 1, 32, 32) and set(masks.unique().tolist()) <= {0.0, 1.0}
    coverage = masks.mean(dim=(1, 2, 3))
    full = coverage == 1.0
    assert 0.15 < full.float().mean() < 0.25  # p_full = 0.2
    partial = coverage[~full]
    assert (partial > 0).all()  # every non-full mask repaints something ...
    assert 0.1 < partial.mean() < 0.6 and (partial < 0.9).float().mean() > 0.9  # ... and keeps context
    # same seed, same masks
    again = MaskGenerator(p_full=0.2)(500, 32, 32, torch.Generator().manual_seed(0))
    assert torch.equal(masks, again)


@pytest.mark.parametrize("shape", ["rectangle", "ellipse", "brush"])
def test_each_mask_shape_repaints_part_of_the_image(shape):
    masks = MaskGenerator(p_full=0.0, weights={shape: 1.0}, max_shapes=1)(200, 48, 48, torch.Generator().manual_seed(1))
    coverage = masks.mean(dim=(1, 2, 3))
    assert (coverage > 0).all() and (coverage < 1).all()
    if shape == "rectangle":  # a rectangle fills its bounding box
        for mask in masks[:20, 0]:
            rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
            box = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
            assert box.all()
    if shape == "brush":  # strokes are thin: they cover less than their bounding box
        filled = [m.sum() / ((m.any(1).sum()) * (m.any(0).sum())) for m in masks[:, 0]]
        assert float(torch.stack(filled).mean()) < 0.8


def test_mask_generator_rejects_bad_settings():
    with pytest.raises(ValueError, match="unknown mask shapes"):
        MaskGenerator(weights={"triangle": 1.0})
    with pytest.raises(ValueError, match="p_full"):
        MaskGenerator(p_full=1.5)


# -- the edit pipeline ------------------------------------------------------------------------------
@torch.no_grad()
def published_inpaint(components, image, mask, caption, level, latents, generator, guidance=4.0):
    """The published inpaint procedure (StableDiffusionInpaintPipeline, 9-channel UNet) written out plainly."""
    vae = components.vae
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    soft = torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None, None]
    masked_image = pixels * (soft < 0.5)
    # one masked image, encoded once (a list of generators: its first), repeated for every image
    first = generator[0] if isinstance(generator, list) else generator
    masked_latents = vae.encode(masked_image).latent_dist.sample(generator=first) * vae.config.scaling_factor
    mask_latent = F.interpolate(soft, size=masked_latents.shape[-2:])

    def extra(batch: int) -> torch.Tensor:  # mask channel, then masked-image latent, for every branch
        return torch.cat([mask_latent.repeat(batch, 1, 1, 1), masked_latents.repeat(batch, 1, 1, 1)], 1)

    return published_guided_euler(
        components, caption, level, latents, steps=STEPS, guidance=guidance, extra_inputs=extra
    )


@pytest.mark.parametrize(("level", "n"), [(0.0, 1), (13.5, 1), (12.0, 2)])
def test_edit_matches_published_inpaint_procedure(pipe, inpaint_components, real_batch, level, n):
    image, mask = real_image(real_batch), soft_mask()
    latents = torch.randn(n, 4, SIZE // 4, SIZE // 4, generator=torch.Generator().manual_seed(5))

    def generator():
        return torch.Generator().manual_seed(7) if n == 1 else [torch.Generator().manual_seed(7 + i) for i in range(n)]

    expected = published_inpaint(inpaint_components, image, mask, CAPTION, level, latents, generator())
    got = pipe(
        CAPTION,
        image,
        mask,
        level=level,
        latents=latents,
        num_images_per_prompt=n,
        generator=generator(),
        num_inference_steps=STEPS,
        output_type="np",
    ).images
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    # the mask matters: a different mask gives different pixels
    other = pipe(
        CAPTION,
        image,
        PIL.Image.new("L", (SIZE, SIZE), 255),
        level=level,
        latents=latents,
        num_images_per_prompt=n,
        generator=generator(),
        num_inference_steps=STEPS,
        output_type="np",
    ).images
    assert np.abs(other - got).max() > 1e-3


def test_paste_back_keeps_unmasked_pixels_exactly(pipe, real_batch):
    image = real_image(real_batch, 1)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[8:24, 10:26] = 255
    kwargs = {"num_inference_steps": 2, "output_type": "np", "gsd_m": 10.0}
    plain = pipe(CAPTION, image, mask, generator=torch.Generator().manual_seed(0), **kwargs).images[0]
    pasted = pipe(
        CAPTION, image, mask, generator=torch.Generator().manual_seed(0), paste_back=True, feather=3, **kwargs
    )
    got = (pasted.images[0] * 255).round().astype(np.uint8)
    keep = mask == 0
    np.testing.assert_array_equal(got[keep], np.asarray(image)[keep])
    assert np.abs(plain[keep] * 255 - np.asarray(image)[keep]).max() > 1  # without it, the VAE changes them
    np.testing.assert_allclose(pasted.images[0][14:18, 16:20], plain[14:18, 16:20], atol=1e-6)  # deep inside: generated


def test_edit_bad_inputs(pipe, real_batch):
    image = real_image(real_batch)
    kwargs = {"num_inference_steps": 1}
    with pytest.raises(ValueError, match="mask is 16x16 pixels but the image is 32x32"):
        pipe(CAPTION, image, PIL.Image.new("L", (16, 16), 255), **kwargs)
    with pytest.raises(ValueError, match="single-channel"):
        pipe(CAPTION, image, image, **kwargs)
    with pytest.raises(ValueError, match="all black"):
        pipe(CAPTION, image, PIL.Image.new("L", (SIZE, SIZE), 0), **kwargs)
    with pytest.raises(ValueError, match="multiples of 4"):
        pipe(CAPTION, image.crop((0, 0, 30, 30)), PIL.Image.new("L", (30, 30), 255), **kwargs)
    # a grey mask stored as RGB is fine
    grey = PIL.Image.new("L", (SIZE, SIZE), 255).convert("RGB")
    assert pipe(CAPTION, image, grey, output_type="np", **kwargs).images.shape == (1, SIZE, SIZE, 3)


def test_folders_load_with_the_matching_pipeline(pipe, tiny_components, tmp_path):
    pipe.save_pretrained(tmp_path / "inpaint")
    loaded = Text2EarthInpaintPipeline.from_pretrained(tmp_path / "inpaint")
    assert loaded.unet.config.in_channels == 9
    with pytest.raises(ModelFolderError, match="holds an inpainting model .9 input channels., but this needs a text"):
        Text2EarthPipeline.from_pretrained(tmp_path / "inpaint")
    text2img = Text2EarthPipeline.from_components(tiny_components)
    text2img.save_pretrained(tmp_path / "t2i")
    with pytest.raises(ModelFolderError, match="holds a text-to-image model"):
        Text2EarthInpaintPipeline.from_pretrained(tmp_path / "t2i")
    # building components with inpainting=True converts a text-to-image folder
    assert build_components(folder=str(tmp_path / "t2i"), inpainting=True).unet.config.in_channels == 9
    wrong = Text2EarthPipeline(pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.unet, pipe.scheduler)
    with pytest.raises(ValueError, match="use Text2EarthInpaintPipeline"):
        wrong.set_progress_bar_config(disable=True)
        wrong(CAPTION, num_inference_steps=1)


# -- training: the same LatentDiffusionModule ------------------------------------------------------
DEMO_MODEL = shipped("demo")


def module_config(inpainting: bool):
    components = {"folder": str(DEMO_MODEL), "inpainting": inpainting}
    optimizer = {"_target_": "torch.optim.AdamW", "lr": 1e-4}
    return {"components": components, "optimizer": optimizer}


def test_zero_init_inpainting_module_has_the_text_to_image_loss(real_batch):
    """Built from the demo model, the 9-channel module starts with exactly the demo model's loss."""
    text2img = LatentDiffusionModule(**module_config(False)).eval()
    inpaint = LatentDiffusionModule(**module_config(True)).eval()
    assert inpaint.unet.config.in_channels == 9 and inpaint.is_inpainting and not text2img.is_inpainting
    batch = {k: v[:4] for k, v in real_batch.items()}
    batch["mask"] = MaskGenerator(p_full=0.0)(4, 64, 64, torch.Generator().manual_seed(0))
    losses = [
        module.diffusion_loss(batch, drop=False, generator=torch.Generator().manual_seed(0))
        for module in (text2img, inpaint)
    ]
    a, b = losses
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    # ... and the zero-initialised channels get gradient, so training moves them
    inpaint.train().diffusion_loss(batch).backward()
    assert inpaint.unet.conv_in.weight.grad[:, 4:].abs().sum() > 0
    with pytest.raises(ValueError, match="data.masks"):  # masks come from the DataLoader workers
        inpaint.diffusion_loss({k: v for k, v in batch.items() if k != "mask"})
    with pytest.raises(ValueError, match="pixel batches"):
        inpaint.diffusion_loss({"latents": torch.zeros(1, 4, 16, 16), "caption": ["x"], "level": [13.0]})


@pytest.mark.slow  # spawns DataLoader workers
def test_masks_are_drawn_in_the_workers_per_rank_worker_and_epoch(embedded_small):
    """Masks come with the batch, one per image, from streams seeded per (seed, rank, worker, epoch)."""
    from data_modules.webdataset_datamodule import ShardDataModule

    def masks(rank: int, epochs: int = 1, workers: int = 0) -> list[torch.Tensor]:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("RANK", str(rank))  # the rank webdataset's pytorch_worker_info reads
            env.setenv("WORLD_SIZE", "2")
            dm = ShardDataModule(
                f"{embedded_small}/train-*.tar",
                batch_size=4,
                num_workers=workers,
                masks={"p_full": 0.0, "max_shapes": 2},
                samples_per_epoch=8,  # resampled: both simulated ranks read a full epoch
            )
            dm.setup("fit")
            loader = dm.train_dataloader()
            return [batch["mask"] for _ in range(epochs) for batch in loader]

    rank0 = masks(0, epochs=2)
    assert rank0[0].shape == (4, 1, 64, 64) and set(rank0[0].unique().tolist()) <= {0.0, 1.0}
    assert all(0 < m.mean() < 1 for m in rank0)  # p_full = 0: every mask repaints part of its image
    assert all(torch.equal(a, b) for a, b in zip(rank0, masks(0, epochs=2), strict=True))  # reproducible
    assert not any(torch.equal(a, b) for a, b in zip(rank0, masks(1, epochs=2), strict=True))  # ranks differ
    assert not torch.equal(rank0[0], rank0[2])  # a new epoch draws new masks
    assert not torch.equal(masks(0, workers=2)[0], masks(0, workers=2)[1])  # two workers, two streams


def test_inpaint_experiment_trains_through_hydra_and_exports(embedded_shards, tmp_path):
    overrides = [
        "experiment=inpaint_demo",
        "debug=fast",
        f"model.components.folder={DEMO_MODEL}",
        f"data.train_shards={embedded_shards}/train-*.tar",
        f"data.val_shards={embedded_shards}/val-*.tar",
        "data.batch_size=4",
        "data.num_workers=0",
        "data.shuffle_buffer=16",
        f"paths.root_dir={tmp_path}",
    ]
    cfg = compose_config("train", overrides, output_dir=tmp_path / "run")
    result = train(cfg)
    assert result["global_step"] == 1 and np.isfinite(result["metrics"]["train/loss"])
    pipe = Text2EarthInpaintPipeline.from_pretrained(tmp_path / "run" / "model")
    assert pipe.unet.config.in_channels == 9 and pipe.config.level_scale == 100.0
