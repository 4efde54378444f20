"""Text2EarthPipeline, guiders, samplers and the shared denoising loop, on the real tiny model classes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from oracles import published_guided_euler

from text2earth.models.components import ModelFolderError, build_from_preset
from text2earth.models.presets import SCHEDULER
from text2earth.pipelines import SCHEDULERS, Text2EarthPipeline, make_scheduler
from text2earth.pipelines.guidance import ClassifierFreeGuidance, TextLevelGuidance
from text2earth.pipelines.sampling import BranchConditions, build_conditions, denoise

SIZE = 32  # pixels; the tiny VAE is 4x down, so 8x8 latents
STEPS = 3
CAPTION = "a river winding through farmland next to a small town"


@pytest.fixture(scope="module")
def components():
    return build_from_preset("tiny")


@pytest.fixture(scope="module")
def pipe(components):
    pipe = Text2EarthPipeline.from_components(components, scheduler="euler")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def noise(batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn((batch, 4, SIZE // 4, SIZE // 4), generator=torch.Generator().manual_seed(seed))


def run(pipe: Text2EarthPipeline, prompt, **kwargs):
    kwargs = {"num_inference_steps": STEPS, "height": SIZE, "width": SIZE, **kwargs}
    kwargs.setdefault("output_type", "np")
    return pipe(prompt, **kwargs)


def published_sampling(
    components, caption: str, level: float, latents: torch.Tensor, guidance: float = 4.0, steps: int = STEPS
):
    """The published Text2Earth procedure (tests/oracles.py), as float images and their uint8 rounding."""
    image = published_guided_euler(components, caption, level, latents, steps=steps, guidance=guidance)
    return image, (image * 255).round().astype(np.uint8)


# ------------------------------------------------------------------------------ (a) published equivalence
@pytest.mark.parametrize("level", [0, 12, 17, 13.5])
def test_matches_published_sampling(components, pipe, level):
    latents = noise(seed=1)
    expected_np, expected_u8 = published_sampling(components, CAPTION, level, latents)
    got = run(pipe, CAPTION, level=level, latents=latents.clone())
    np.testing.assert_allclose(got.images, expected_np, atol=1e-5, rtol=0)
    pil = run(pipe, CAPTION, level=level, latents=latents.clone(), output_type="pil").images
    assert len(pil) == 1 and pil[0].size == (SIZE, SIZE) and pil[0].mode == "RGB"
    np.testing.assert_array_equal(np.asarray(pil[0]), expected_u8[0])
    assert got.levels == [float(level)] and got.prompts == [CAPTION]


def test_reference_is_sensitive_to_guidance_and_level(components):
    # Guards the guard: the reference loop must tell apart what the pipeline could get wrong.
    latents = noise(seed=1)
    base, _ = published_sampling(components, CAPTION, 17, latents)
    assert np.abs(base - published_sampling(components, CAPTION, 17, latents, guidance=2.0)[0]).max() > 1e-3
    assert np.abs(base - published_sampling(components, CAPTION, 12, latents)[0]).max() > 1e-4


# ------------------------------------------------------------------------------ (b) prompt prefix
def test_prefix_prompt_equals_caption_and_level(pipe):
    latents = noise(seed=2)
    plain = run(pipe, CAPTION, level=17, latents=latents)
    prefixed = run(pipe, f"17_GOOGLE_LEVEL_{CAPTION}", latents=latents)
    np.testing.assert_array_equal(prefixed.images, plain.images)
    assert prefixed.prompts == [CAPTION] and prefixed.levels == [17.0]
    # The same explicit level is accepted, a different one is a conflict.
    np.testing.assert_array_equal(
        run(pipe, f"17_GOOGLE_LEVEL_{CAPTION}", level=17, latents=latents).images, plain.images
    )
    with pytest.raises(ValueError, match="prefix"):
        run(pipe, f"17_GOOGLE_LEVEL_{CAPTION}", level=12, latents=latents)


def test_no_level_means_unknown_and_gsd_equals_level(pipe):
    latents = noise(seed=3)
    assert run(pipe, CAPTION, latents=latents).levels == [0.0]
    np.testing.assert_array_equal(
        run(pipe, CAPTION, latents=latents).images, run(pipe, CAPTION, level=0, latents=latents).images
    )
    np.testing.assert_array_equal(
        run(pipe, CAPTION, gsd_m=1.0, latents=latents).images, run(pipe, CAPTION, level=17, latents=latents).images
    )


def test_per_prompt_level_list_with_none_keeps_prefix(pipe):
    out = run(pipe, ["15_GOOGLE_LEVEL_a port", "a forest"], level=[None, 12], output_type="latent")
    assert out.levels == [15.0, 12.0] and out.prompts == ["a port", "a forest"]


# ------------------------------------------------------------------------------ (c) save / load
def test_save_load_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "model")
    index = json.loads((tmp_path / "model" / "model_index.json").read_text())
    assert index["level_scale"] == 100.0 and index["_class_name"] == "Text2EarthPipeline"
    loaded = Text2EarthPipeline.from_pretrained(tmp_path / "model")
    assert loaded.config.level_scale == 100.0
    assert isinstance(loaded.scheduler, EulerDiscreteScheduler)
    latents = noise(seed=4)
    np.testing.assert_array_equal(
        run(loaded, CAPTION, level=13, latents=latents).images, run(pipe, CAPTION, level=13, latents=latents).images
    )
    ddim = Text2EarthPipeline.from_pretrained(tmp_path / "model", scheduler="ddim")
    assert isinstance(ddim.scheduler, DDIMScheduler)
    assert ddim.scheduler.config.beta_schedule == "scaled_linear" and ddim.scheduler.config.beta_end == 0.012


@pytest.mark.parametrize("class_name", ["StableDiffusionPipeline", "Text2EarthDiffusionPipeline"])
def test_loads_published_layout_whatever_class_name(pipe, tmp_path, class_name):
    folder = tmp_path / "published"
    pipe.save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())
    index.pop("level_scale")  # published folders do not have it: the published model uses the raw level
    index.update(
        _class_name=class_name,
        safety_checker=[None, None],
        feature_extractor=[None, None],
        requires_safety_checker=False,
    )
    (folder / "model_index.json").write_text(json.dumps(index))
    loaded = Text2EarthPipeline.from_pretrained(folder)
    assert loaded.config.level_scale == 1.0
    latents = noise(seed=5)
    # Level 0 is 0 at any level_scale, so the output must equal the original model's.
    np.testing.assert_array_equal(
        run(loaded, CAPTION, latents=latents).images, run(pipe, CAPTION, latents=latents).images
    )


# ------------------------------------------------------------------------------ (d) bad folders
def test_missing_folder_and_hub_id_fail_clearly(tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist"):
        Text2EarthPipeline.from_pretrained(tmp_path / "nope")
    with pytest.raises(ModelFolderError, match="hub id"):
        Text2EarthPipeline.from_pretrained("lcybuaa/Text2Earth")
    (tmp_path / "partial" / "unet").mkdir(parents=True)
    with pytest.raises(ModelFolderError, match="missing"):
        Text2EarthPipeline.from_pretrained(tmp_path / "partial")


# ------------------------------------------------------------------------------ (e) batching
def test_several_images_per_prompt_with_per_prompt_levels(pipe):
    latents = noise(batch=6, seed=6)
    out = run(pipe, ["a harbour with boats", "dense forest"], level=[12, 17], num_images_per_prompt=3, latents=latents)
    assert out.images.shape == (6, SIZE, SIZE, 3)
    assert out.levels == [12.0] * 3 + [17.0] * 3
    assert out.prompts == ["a harbour with boats"] * 3 + ["dense forest"] * 3
    assert np.abs(out.images[0] - out.images[1]).max() > 1e-3  # different noise per image
    # Each image is conditioned on its own prompt and level: the second prompt alone, same noise.
    alone = run(pipe, "dense forest", level=17, num_images_per_prompt=3, latents=latents[3:])
    np.testing.assert_allclose(out.images[3:], alone.images, atol=1e-5, rtol=0)


def test_generator_list(pipe):
    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    out = run(pipe, ["a", "b"], num_images_per_prompt=2, generator=gens, output_type="latent")
    assert out.images.shape == (4, 4, SIZE // 4, SIZE // 4)
    with pytest.raises(ValueError, match="generators"):
        run(pipe, ["a", "b"], num_images_per_prompt=2, generator=gens[:3])


# ------------------------------------------------------------------------------ (f) guidance
def test_text_level_guidance_with_equal_scales_is_cfg(pipe):
    latents = noise(seed=7)
    cfg = run(pipe, CAPTION, level=14, guidance_scale=3.0, latents=latents)
    tlg = run(pipe, CAPTION, level=14, guidance_scale=3.0, level_guidance_scale=3.0, latents=latents)
    np.testing.assert_allclose(tlg.images, cfg.images, atol=1e-5, rtol=0)
    # Unequal scales are a different computation.
    other = run(pipe, CAPTION, level=14, guidance_scale=3.0, level_guidance_scale=8.0, latents=latents)
    assert np.abs(other.images - cfg.images).max() > 1e-4


def test_zero_level_guidance_ignores_level(pipe):
    # eps = u + g_t (t - u): no branch sees the level any more.
    latents = noise(seed=8)
    a = run(pipe, CAPTION, level=11, level_guidance_scale=0.0, latents=latents)
    b = run(pipe, CAPTION, level=18, level_guidance_scale=0.0, latents=latents)
    np.testing.assert_array_equal(a.images, b.images)


def test_guider_branches_and_combine():
    u, t, c = (torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(i)) for i in range(3))
    cfg = ClassifierFreeGuidance(4.0)
    assert cfg.num_branches == 2
    assert cfg.branches(["x"], [17.0], ["neg"]) == [(["neg"], [0.0]), (["x"], [17.0])]
    torch.testing.assert_close(cfg.combine([u, c]), u + 4.0 * (c - u))
    tlg = TextLevelGuidance(4.0, 4.0)
    assert tlg.branches(["x"], [17.0]) == [([""], [0.0]), (["x"], [0.0]), (["x"], [17.0])]
    torch.testing.assert_close(tlg.combine([u, t, c]), cfg.combine([u, c]), atol=1e-5, rtol=0)
    single = ClassifierFreeGuidance(1.0)
    assert single.num_branches == 1 and single.branches(["x"], [12.0]) == [(["x"], [12.0])]
    assert single.combine([c]) is c


def test_negative_prompt(pipe):
    latents = noise(seed=9)
    base = run(pipe, CAPTION, level=16, latents=latents)
    neg = run(pipe, CAPTION, level=16, negative_prompt="clouds, haze", latents=latents)
    assert np.abs(base.images - neg.images).max() > 1e-4
    # Without guidance there is no unconditional branch for a negative prompt to change.
    a = run(pipe, CAPTION, level=16, guidance_scale=1.0, latents=latents)
    b = run(pipe, CAPTION, level=16, guidance_scale=1.0, negative_prompt="clouds", latents=latents)
    np.testing.assert_array_equal(a.images, b.images)


# ------------------------------------------------------------------------------ (g) samplers
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_each_scheduler_runs(components, name):
    pipe = Text2EarthPipeline.from_components(components, scheduler=name)
    assert isinstance(pipe.scheduler, SCHEDULERS[name])
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"
    assert pipe.scheduler.config.prediction_type == "epsilon"
    out = run(pipe, CAPTION, level=15, generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, SIZE, SIZE, 3) and np.isfinite(out.images).all()


def test_make_scheduler():
    dpm = make_scheduler("dpmpp_2m", SCHEDULER)
    assert isinstance(dpm, DPMSolverMultistepScheduler) and dpm.config.algorithm_type == "dpmsolver++"
    vpred = make_scheduler("euler", {**SCHEDULER, "prediction_type": "v_prediction"})
    assert vpred.config.prediction_type == "v_prediction"  # the model's settings survive
    assert isinstance(make_scheduler("ddpm", dpm.config), DDPMScheduler)
    with pytest.raises(ValueError, match="euler.*ddim.*dpmpp_2m"):
        make_scheduler("plms", SCHEDULER)


# ------------------------------------------------------------------------------ (h) the level matters
def test_level_changes_output(pipe):
    latents = noise(seed=10)
    images = {lv: run(pipe, CAPTION, level=lv, latents=latents).images for lv in (0, 12, 17)}
    assert np.abs(images[12] - images[17]).max() > 1e-3
    assert np.abs(images[0] - images[12]).max() > 1e-3


def test_zeroed_level_embedding_ignores_level():
    components = build_from_preset("tiny")
    torch.nn.init.zeros_(components.unet.class_embedding.linear_2.weight)
    torch.nn.init.zeros_(components.unet.class_embedding.linear_2.bias)
    pipe = Text2EarthPipeline.from_components(components, scheduler="euler")
    latents = noise(seed=10)
    np.testing.assert_array_equal(
        run(pipe, CAPTION, level=12, latents=latents).images, run(pipe, CAPTION, level=17, latents=latents).images
    )


# ------------------------------------------------------------------------------ outputs and validation
def test_output_types(pipe):
    latents = noise(seed=11)
    pt = run(pipe, CAPTION, latents=latents, output_type="pt").images
    assert isinstance(pt, torch.Tensor) and pt.shape == (1, 3, SIZE, SIZE) and pt.min() >= 0 and pt.max() <= 1
    lat = run(pipe, CAPTION, latents=latents, output_type="latent").images
    assert lat.shape == (1, 4, SIZE // 4, SIZE // 4)
    decoded = pipe.vae.decode(lat / pipe.vae.config.scaling_factor).sample
    torch.testing.assert_close((decoded / 2 + 0.5).clamp(0, 1), pt)
    images, levels, prompts = run(pipe, CAPTION, latents=latents, output_type="pil", return_dict=False)
    assert isinstance(images[0], PIL.Image.Image) and levels == [0.0] and prompts == [CAPTION]


def test_default_size_comes_from_the_unet(pipe):
    out = pipe(CAPTION, num_inference_steps=1, output_type="latent")
    assert out.images.shape[-1] == pipe.unet.config.sample_size


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prompt": []}, "non-empty"),
        ({"prompt": ["ok", 3]}, "string"),
        ({"height": 30}, "multiple of 4"),
        ({"output_type": "jpeg"}, "output_type"),
        ({"prompt": ["a", "b"], "negative_prompt": ["x"]}, "negative prompts"),
        ({"level": 30}, "level"),
        ({"level": 12, "gsd_m": 1.0}, "either"),
        ({"prompt": ["a", "b"], "level": [12]}, "2 prompts"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"latents": torch.zeros(2, 4, 8, 8)}, "shape"),
    ],
)
def test_bad_inputs(pipe, kwargs, match):
    prompt = kwargs.pop("prompt", CAPTION)
    with pytest.raises(ValueError, match=match):
        run(pipe, prompt, **kwargs)


def test_denoise_checks_branch_count(components):
    conditions = BranchConditions(torch.zeros(2, 77, 64), torch.zeros(2), num_branches=2)
    with pytest.raises(ValueError, match="branches"):
        denoise(
            components.scheduler,
            noise(),
            timesteps=[],
            guider=TextLevelGuidance(),
            predict=lambda *a: None,
            conditions=conditions,
        )


@pytest.mark.slow
def test_import_is_lazy():
    code = (
        "import sys, text2earth; assert 'torch' not in sys.modules, 'torch imported eagerly'; "
        "from text2earth import Text2EarthPipeline; assert Text2EarthPipeline.__name__ == 'Text2EarthPipeline'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_class_labels_stay_float32_in_bf16(components):
    branches = ClassifierFreeGuidance(4.0).branches(["a port"], [13.5])
    cond = build_conditions(
        branches,
        components.text_encoder,
        components.tokenizer,
        level_scale=100.0,
        num_images_per_prompt=2,
        dtype=torch.bfloat16,
    )
    assert cond.text_embeds.dtype == torch.bfloat16 and cond.text_embeds.shape[0] == 4
    # bf16 would round 1350 to 1352, i.e. silently sample at level 13.52.
    assert cond.class_labels.dtype == torch.float32
    assert cond.class_labels.tolist() == [0.0, 0.0, 1350.0, 1350.0]


def test_bf16_pipeline_runs():
    components = build_from_preset("tiny")
    for part in (components.unet, components.vae, components.text_encoder):
        part.to(torch.bfloat16)
    pipe = Text2EarthPipeline.from_components(components, scheduler="euler")
    out = run(pipe, CAPTION, level=13.5, generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, SIZE, SIZE, 3) and np.isfinite(out.images).all()


def test_progress_bar_follows_set_progress_bar_config(components, capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)  # an in-process CLI test may have set it
    pipe = Text2EarthPipeline.from_components(components, scheduler="euler")
    kwargs = {"num_inference_steps": 2, "output_type": "latent"}
    pipe(CAPTION, **kwargs)  # off a terminal (captured here): no bar, so log files get no escape codes
    assert capsys.readouterr().err == ""
    pipe.set_progress_bar_config(desc="custom", disable=False)
    with pipe.progress_disabled():
        pipe(CAPTION, **kwargs)
    assert capsys.readouterr().err == ""
    assert pipe._progress_bar_config == {"desc": "custom", "disable": False}  # restored after the block
    pipe(CAPTION, **kwargs)
    assert "custom" in capsys.readouterr().err
    pipe.set_progress_bar_config(disable=True)
    pipe(CAPTION, **kwargs)
    assert capsys.readouterr().err == ""
