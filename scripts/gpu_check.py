"""`make gpu-check`: the project's speed on one GPU, each figure beside its H200 anchor (REFERENCE §7).

One script, at most ~8 minutes on one GPU: parameters of ``text2earth_sd2``; training img/s at batch 64
(plain diffusers-style loop; this module uncached, cached, cached + compile, via ``scripts.bench``);
sampling (50 Euler steps, CFG 4, VAE decode) for one image and at batch 64, eager and fast
(:meth:`Text2EarthPipeline.enable_fast_sampling`); one UNet call at batch 2; the largest pixel difference
between bf16 and fp32 sampling; peak memory. Prints a table, writes JSON (``--out``).

Without a CUDA device (or with ``--smoke``) it runs the ``tiny`` preset at 64 px, few steps, small
batches, ``aot_eager`` compile: a check that every path runs (CI runs it), not a speed figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.utils import logging as diffusers_logging

from scripts.bench import run as bench_training
from text2earth.core.paths import project_root
from text2earth.io.files import write_atomic
from text2earth.models.components import build_from_preset, count_parameters
from text2earth.pipelines.text2img import Text2EarthPipeline

# REFERENCE §7 (H200, SD2-base + level embedding, random weights, 256 px, bf16) and the goals.
ANCHORS = {
    "train_plain_img_s": (215.0, None),
    "train_uncached_img_s": (215.0, None),
    "train_cached_img_s": (386.0, None),
    "train_cached_compile_img_s": (497.0, ">= 540"),
    "sample_one_eager_s": (1.41, None),
    "sample_one_fast_s": (1.41, "<= 0.30"),
    "sample_batch_eager_img_s": (15.0, None),
    "sample_batch_fast_img_s": (15.0, ">= 30"),
    "unet_batch2_eager_ms": (27.7, None),
    "unet_batch2_fast_ms": (4.4, None),
}
PROMPT = "a harbour with container ships and cranes"


_START = time.perf_counter()


def _progress(what: str) -> None:
    """A line on stderr per finished part: a run cut short still shows how far it got."""
    print(f"[gpu-check {time.perf_counter() - _START:6.0f} s] {what} done", file=sys.stderr, flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _seconds(fn: Callable[[], Any], device: torch.device, repeats: int = 1) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def _pipeline(preset: str, device: torch.device, dtype: torch.dtype) -> Text2EarthPipeline:
    pipe = Text2EarthPipeline.from_components(build_from_preset(preset), scheduler="euler").to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sample(pipe: Text2EarthPipeline, batch: int, steps: int, seed: int = 0) -> np.ndarray:
    size = pipe.unet.config.sample_size
    noise = torch.randn((batch, 4, size, size), generator=torch.Generator().manual_seed(seed))
    return pipe(
        [PROMPT] * batch, level=17, num_inference_steps=steps, guidance_scale=4.0, latents=noise, output_type="np"
    ).images


def _unet_call(pipe: Text2EarthPipeline) -> Callable[[], Any]:
    """One UNet call at batch 2 (one image with CFG), inputs made once on the device."""
    unet, size = pipe.unet, pipe.unet.config.sample_size
    device, dtype = unet.device, unet.dtype
    x = torch.randn(2, unet.config.in_channels, size, size, device=device, dtype=dtype)
    text = torch.randn(2, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)
    t, labels = torch.tensor(500.0, device=device), torch.tensor([0.0, 1700.0], device=device)
    return lambda: unet(x, t, encoder_hidden_states=text, class_labels=labels, return_dict=False)


def sampling(preset: str, device: torch.device, batch: int, steps: int, smoke: bool) -> dict[str, Any]:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    pipe = _pipeline(preset, device, dtype)
    out: dict[str, Any] = {}
    _sample(pipe, 1, 2)  # first-call costs (allocator, kernels) stay out of the eager figures
    out["sample_one_eager_s"] = _seconds(lambda: _sample(pipe, 1, steps), device)
    out["sample_batch_eager_img_s"] = batch / _seconds(lambda: _sample(pipe, batch, steps), device)
    call = _unet_call(pipe)
    call()
    out["unet_batch2_eager_ms"] = 1000 * _seconds(call, device, repeats=10)

    # bf16 against fp32, same weights (the preset is seeded) and noise, eager: largest difference in grey levels.
    reference_pipe = _pipeline(preset, device, torch.float32)
    reference = _sample(reference_pipe, 1, steps)
    del reference_pipe
    half = _sample(pipe if dtype == torch.bfloat16 else _pipeline(preset, device, torch.bfloat16), 1, steps)
    out["bf16_vs_fp32_max_grey_levels"] = float(np.abs(half - reference).max() * 255)
    _progress("eager sampling and bf16 vs fp32")

    state = pipe.enable_fast_sampling(backend="aot_eager" if smoke else "inductor")
    out["fast_warmup_one_s"] = _seconds(lambda: _sample(pipe, 1, steps), device)
    out["sample_one_fast_s"] = _seconds(lambda: _sample(pipe, 1, steps), device)
    out["fast_warmup_batch_s"] = _seconds(lambda: _sample(pipe, batch, steps), device)
    out["sample_batch_fast_img_s"] = batch / _seconds(lambda: _sample(pipe, batch, steps), device)
    call = _unet_call(pipe)
    call(), call()  # compile, then record the graph
    out["unet_batch2_fast_ms"] = 1000 * _seconds(call, device, repeats=10)
    out["fast"] = {"applied": state.applied, "skipped": state.skipped, "summary": state.summary()}
    out["fast_recompiles_after_warmup"] = state.last_call_compilations
    _progress("fast sampling")
    return out


def training(preset: str, device: torch.device, batch: int, size: int, smoke: bool) -> dict[str, Any]:
    iters, warmup = (2, 1) if smoke else (15, 3)
    plain = bench_training(preset, batch, size, iters, warmup, compile=False, device=device)
    out = {
        "train_plain_img_s": plain["reference_img_s"],
        "train_uncached_img_s": plain["module_uncached_img_s"],
        "train_cached_img_s": plain["module_img_s"],
    }
    if smoke:  # inductor needs minutes on a CPU for the training graph (forward + backward)
        out["train_cached_compile_img_s"] = None
    else:
        out["train_cached_compile_img_s"] = bench_training(preset, batch, size, iters, warmup, True, device)[
            "module_img_s"
        ]
    _progress("training")
    return out


def check(smoke: bool) -> dict[str, Any]:
    device = torch.device("cpu" if smoke else "cuda")
    preset, size, batch, steps = ("tiny", 64, 4, 4) if smoke else ("text2earth_sd2", 256, 64, 50)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({platform.machine()})",
        "smoke": smoke,
        "preset": preset,
        "image_size": size,
        "batch": batch,
        "steps": steps,
        "parameters_text2earth_sd2": count_parameters("text2earth_sd2"),
    }
    start = time.perf_counter()
    result.update(training(preset, device, 64 if not smoke else 8, size, smoke))
    result.update(sampling(preset, device, batch, steps, smoke))
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    else:  # ru_maxrss is KiB on Linux: the whole process, the best a CPU offers
        result["peak_memory_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result["wall_s"] = time.perf_counter() - start
    result["anchors"] = {k: {"h200_anchor": a, "goal": g} for k, (a, g) in ANCHORS.items()}
    return result


def table(result: dict[str, Any]) -> str:
    def fmt(value: Any) -> str:
        return "not run" if value is None else f"{value:,.3f}" if isinstance(value, float) else str(value)

    mode = "CPU SMOKE (tiny preset; not a speed figure)" if result["smoke"] else "full size"
    lines = [
        f"gpu-check on {result['device']}: {mode}; {result['preset']} at {result['image_size']} px, "
        f"{result['steps']} Euler steps, sampling batch {result['batch']}",
        "parameters of text2earth_sd2: "
        + ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in result["parameters_text2earth_sd2"].items()),
        f"| {'figure':34} | {'measured':>12} | {'H200 anchor':>11} | {'goal':>8} |",
        f"|{'-' * 36}|{'-' * 14}|{'-' * 13}|{'-' * 10}|",
    ]
    for key, (anchor, goal) in ANCHORS.items():
        lines.append(f"| {key:34} | {fmt(result.get(key)):>12} | {anchor:>11} | {goal or '':>8} |")
    lines += [
        f"| {'bf16_vs_fp32_max_grey_levels':34} | {fmt(result['bf16_vs_fp32_max_grey_levels']):>12} | {'':>11} | {'':>8} |",
        f"| {'peak_memory_gib':34} | {fmt(result['peak_memory_gib']):>12} | {'':>11} | {'':>8} |",
        f"fast sampling: warm-up {result['fast_warmup_one_s']:.1f} s (1 image) + {result['fast_warmup_batch_s']:.1f} s "
        f"(batch {result['batch']}); {result['fast']['summary']}",
        f"total {result['wall_s']:.0f} s",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny preset on the CPU (automatic without CUDA)")
    parser.add_argument(
        "--out",
        default=None,
        help="JSON output (default: outputs/gpu_check/gpu_check.json in the project root)",
    )
    args = parser.parse_args(argv)
    smoke = args.smoke or not torch.cuda.is_available()
    if smoke:  # tiny ops oversubscribe a small shared CPU (measured 10x+ slower with all threads)
        torch.set_num_threads(1)
    diffusers_logging.set_verbosity_error()  # casting warnings from .to(dtype) of random-weight models
    result = check(smoke=smoke)
    print(table(result))
    out = Path(args.out) if args.out else project_root() / "outputs" / "gpu_check" / "gpu_check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, (json.dumps(result, indent=2) + "\n").encode())
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
