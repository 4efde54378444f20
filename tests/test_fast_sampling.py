"""Fast sampling (`enable_fast_sampling`): compiled UNet + VAE decoder give eager's pixels, compile once.

The compiled pipeline is built once per module (tracing takes ~15 s on two cores). The CPU tests use the
``aot_eager`` backend: dynamo traces, guards and recompiles exactly as with inductor, without spending
minutes generating C++ kernels for a 64-px model. CUDA graphs need a CUDA device and are tested there.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from text2earth.models.components import build_from_preset
from text2earth.pipelines.fast import quiet_compiler
from text2earth.pipelines.sampling import unet_predictor
from text2earth.pipelines.text2img import SamplingRequest, Text2EarthPipeline

STEPS = 4


def _pipe() -> Text2EarthPipeline:
    pipe = Text2EarthPipeline.from_components(build_from_preset("tiny"), scheduler="euler")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sample(pipe: Text2EarthPipeline, batch: int = 2) -> np.ndarray:
    noise = torch.randn((batch, 4, 16, 16), generator=torch.Generator().manual_seed(0))
    prompts = [f"a river through fields {i}" for i in range(batch)]
    return pipe(prompts, level=15, num_inference_steps=STEPS, latents=noise, output_type="np").images


@pytest.fixture(scope="module")
def eager_and_fast():
    eager = _sample(_pipe())
    pipe = _pipe()
    state = pipe.enable_fast_sampling(backend="aot_eager")
    first = _sample(pipe)
    compiled_first = state.last_call_compilations
    second = _sample(pipe)
    return eager, first, second, compiled_first, pipe


@pytest.mark.slow  # the compiled fixture traces for ~20 s
def test_fast_sampling_gives_eager_pixels(eager_and_fast):
    eager, first, second, _, pipe = eager_and_fast
    assert pipe.fast.compiled and "fused QKV" in pipe.fast.applied and "channels-last" in pipe.fast.applied
    # bf16 resolves 1/128; fp32 compiled vs eager differs only by reassociation (~1e-6 measured).
    assert np.abs(first - eager).max() < 1e-3
    assert np.array_equal(first, second)


@pytest.mark.slow  # the compiled fixture traces for ~20 s
def test_second_call_with_the_same_shapes_does_not_recompile(eager_and_fast):
    _, _, _, compiled_first, pipe = eager_and_fast
    assert compiled_first >= 2  # the UNet and the VAE decoder
    assert pipe.fast.last_call_compilations == 0
    assert pipe.fast.compilations == compiled_first and pipe.fast.calls == 2
    assert pipe.fast.warmup_s > 0
    summary = pipe.fast.summary()
    assert f"{compiled_first} graph compilations in 2 calls (0 in the last)" in summary
    # The tables the step loop reads stay on the host: no device sync per step on a GPU.
    assert pipe.scheduler.sigmas.device.type == "cpu"


@pytest.mark.slow  # the compiled fixture traces for ~20 s
def test_cuda_graphs_are_skipped_on_the_cpu_and_said_so(eager_and_fast):
    *_, pipe = eager_and_fast
    assert "CUDA graphs" not in pipe.fast.applied
    assert pipe.fast.skipped["CUDA graphs"]
    assert "CUDA graphs skipped" in pipe.fast.summary()


def test_without_compile_fused_qkv_and_channels_last_keep_the_pixels():
    eager = _sample(_pipe(), batch=1)
    pipe = _pipe()
    state = pipe.enable_fast_sampling(compile=False)
    assert not state.compiled and state.applied == ["fused QKV", "channels-last"]
    assert np.abs(_sample(pipe, batch=1) - eager).max() < 1e-4
    assert state.compilations == 0


def test_quiet_compiler_keeps_compiler_warnings_off_the_terminal(caplog):
    import logging

    with quiet_compiler():
        logging.getLogger("torch._inductor").warning("noise")
    assert "noise" not in caplog.text
    logging.getLogger("torch._inductor").warning("after")
    assert "after" in caplog.text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device; none on this machine")
def test_cuda_graphs_on_a_cuda_device_and_no_sync_in_the_loop():
    pipe = _pipe().to("cuda")
    state = pipe.enable_fast_sampling()
    assert "CUDA graphs" in state.applied
    _sample(pipe)  # warm-up (compiles, records the graphs)

    def strict_from_step_1(i, t, latents):  # steps 1.. run with every host-device sync raising
        torch.cuda.set_sync_debug_mode("error")

    try:
        request = SamplingRequest(["a river"] * 2, [15.0] * 2, height=64, width=64, num_inference_steps=STEPS)
        pipe.denoise_latents(request, unet_predictor(pipe.unet), callback=strict_from_step_1)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_generate_cli_fast_prints_one_summary_line(tmp_path, capsys, monkeypatch):
    from text2earth.cli.main import main
    from text2earth.core.paths import shipped

    # Compiling the demo model with inductor takes minutes on a CPU; dynamo switched off keeps the whole
    # --fast path (fusing, channels-last, tracking, the report) at eager speed.
    monkeypatch.setattr(torch._dynamo.config, "disable", True)
    args = ["generate", "a river", "--model", str(shipped("demo")), "--level", "14", "--n", "1", "--steps", "2"]
    assert main([*args, "--fast", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("fast sampling on cpu: fused QKV, channels-last, compile (inductor default")
    assert "CUDA graphs skipped" in lines[0] and "0 graph compilations in 1 calls" in lines[0]
    assert lines[1] == f"wrote 1 images and {tmp_path / 'grid.png'}"
