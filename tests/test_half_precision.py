"""Half-precision exports: diffusers variant files, loading them, fp16-safe VAE decode, and the
``pipeline.py`` every export ships, which samples the same pixels in plain diffusers without this package."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from text2earth.models.components import ModelFolderError, build_from_preset, save_folder
from text2earth.pipelines.text2img import Text2EarthPipeline, decode_latents

STEPS = 4


@pytest.fixture(scope="module")
def fp16_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export") / "model"
    components = build_from_preset("tiny")
    save_folder(components, folder, dtype=torch.float16, variant="fp16")
    assert components.unet.dtype == torch.float32  # the caller's weights are not cast
    return folder


def test_export_writes_variant_files_and_the_standalone_pipeline(fp16_export):
    names = {p.relative_to(fp16_export).as_posix() for p in fp16_export.rglob("*.safetensors")}
    assert names == {
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.fp16.safetensors",
        "text_encoder/model.fp16.safetensors",
    }
    assert (fp16_export / "pipeline.py").is_file()
    pipe = Text2EarthPipeline.from_pretrained(fp16_export, torch_dtype=torch.float16, variant="fp16")
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.float16


def test_asking_for_a_variant_the_folder_lacks_is_one_line(fp16_export):
    with pytest.raises(ModelFolderError, match="no 'bf16' weights.*variants there: \\['fp16'\\]"):
        Text2EarthPipeline.from_pretrained(fp16_export, variant="bf16")


@pytest.mark.slow  # a fresh interpreter loading diffusers: ~25 s
def test_the_shipped_pipeline_samples_our_pixels_in_plain_diffusers(fp16_export, tmp_path):
    noise = torch.randn((2, 4, 16, 16), generator=torch.Generator().manual_seed(3))
    torch.save(noise, tmp_path / "noise.pt")
    prompts = ["15_GOOGLE_LEVEL_a harbour with ships", "dense forest"]
    pipe = Text2EarthPipeline.from_pretrained(fp16_export, torch_dtype=torch.float32, variant="fp16")
    pipe.set_progress_bar_config(disable=True)
    # The folder's own scheduler (DDPM) draws noise each step: both sides get the same seeded generator.
    generator = torch.Generator().manual_seed(0)
    ours = pipe(prompts, num_inference_steps=STEPS, latents=noise, generator=generator, output_type="np").images

    # A fresh interpreter in which `import text2earth` fails: the export must not need this package.
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["text2earth"] = None
        import numpy as np, torch
        from diffusers import DiffusionPipeline
        folder = {str(fp16_export)!r}
        pipe = DiffusionPipeline.from_pretrained(
            folder, custom_pipeline=folder + "/pipeline.py", trust_remote_code=True,
            torch_dtype=torch.float32, variant="fp16", local_files_only=True,
        )
        pipe.set_progress_bar_config(disable=True)
        noise = torch.load({str(tmp_path / "noise.pt")!r}, weights_only=True)
        generator = torch.Generator().manual_seed(0)
        out = pipe({prompts!r}, num_inference_steps={STEPS}, latents=noise, generator=generator, output_type="np").images
        np.save({str(tmp_path / "theirs.npy")!r}, out)
        print(type(pipe).__name__, pipe.config.level_scale)
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    level_scale = json.loads((fp16_export / "model_index.json").read_text())["level_scale"]
    assert run.stdout.split()[-2:] == ["Text2EarthDiffusionPipeline", str(level_scale)]
    theirs = np.load(tmp_path / "theirs.npy")
    assert theirs.shape == ours.shape
    assert np.abs(theirs - ours).max() < 1e-5


def test_fp16_vae_decode_upcasts_where_it_overflows():
    vae = build_from_preset("tiny").vae
    with torch.no_grad():  # activations past fp16's 65504, as SD2's decoder reaches on real latents
        vae.decoder.conv_in.weight.mul_(1e5)  # weights still below 65504
    latents = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(0))
    reference = decode_latents(vae, latents)
    half = copy.deepcopy(vae).half()
    plain = half.decode((latents / half.config.scaling_factor).half()).sample
    assert not torch.isfinite(plain).all()  # the overflow is real
    decoded = decode_latents(half, latents)
    assert torch.isfinite(decoded).all() and half.dtype == torch.float16
    assert (decoded.float() - reference).abs().max() < 1e-2
