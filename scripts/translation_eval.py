"""Score a translator on held-out pairs: PSNR / SSIM of the ControlNet output against simple baselines.

The baseline of every task is its condition image as it stands: PAN replicated to RGB, NIR copied to each
channel, the bicubic upsample for super-resolution, the hazy input for dehazing, PAN taken as NIR. The
autoencoder's reconstruction of the target is reported too: no latent model can beat its own VAE, so it is
the ceiling of the column beside it. Single-band targets are scored on one band (the output's channel mean).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from text2earth.core.image_metrics import psnr, ssim
from text2earth.core.paths import project_root
from text2earth.io.bands import TASKS
from text2earth.io.images import labelled_grid, save_png


def _as_target_modality(images: torch.Tensor, task: str) -> torch.Tensor:
    """Single-band targets: every image reduced to its channel mean (replicated back to 3 channels)."""
    if TASKS[task][1] == "rgb":
        return images
    return images.mean(dim=1, keepdim=True).expand_as(images)


@torch.no_grad()
def evaluate_translator(
    translator: str | Path,
    pairs_dir: str | Path | None = None,
    embedded_dir: str | Path | None = None,
    n_tiles: int = 48,
    steps: int = 20,
    batch_size: int = 16,
    seed: int = 0,
    strip_tiles: int = 6,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Mean PSNR / SSIM over the first ``n_tiles`` held-out pairs of the translator's task; with
    ``out_dir``, also an input / baseline / output / target strip ``{task}_strip.png``."""
    from data_modules.pairs import PairShardDataModule
    from text2earth.pipelines.translate import Text2EarthControlNetPipeline

    pipe, info = Text2EarthControlNetPipeline.from_translator(translator)
    pipe.set_progress_bar_config(disable=True)  # one bar over the tiles instead
    task = info["task"]
    pairs_dir = pairs_dir or project_root() / "data" / "pairs"  # the folders the training configs read
    embedded_dir = embedded_dir or project_root() / "data" / "embedded"
    dm = PairShardDataModule(task, str(pairs_dir), str(embedded_dir), batch_size=batch_size, num_workers=0)
    dm.setup("validate")
    vae = pipe.vae
    scores: dict[str, list[torch.Tensor]] = {}
    kept: list[tuple[torch.Tensor, ...]] = []
    seen = 0
    bar = tqdm(total=n_tiles, desc=f"evaluate {task}", unit="tile", disable=None if progress else True)
    for batch in dm.val_dataloader():
        take = min(n_tiles - seen, len(batch["key"]))
        if take <= 0:
            break
        cond = batch["conditioning"][:take]
        target = (batch["pixel_values"][:take] + 1) / 2
        generators = [torch.Generator().manual_seed(seed + seen + i) for i in range(take)]
        output = pipe(
            cond,
            list(batch["caption"][:take]),
            level=batch["level"][:take].tolist(),
            num_inference_steps=steps,
            generator=generators,
            output_type="pt",
        ).images
        latents = vae.encode(target * 2 - 1).latent_dist.mode()
        recon = ((vae.decode(latents).sample + 1) / 2).clamp(0, 1)
        results = {
            "baseline": cond,
            "controlnet": _as_target_modality(output.float(), task),
            "vae_ceiling": _as_target_modality(recon, task),
        }
        for name, images in results.items():
            scores.setdefault(f"{name}_psnr", []).append(psnr(images, target))
            scores.setdefault(f"{name}_ssim", []).append(ssim(images, target))
        kept += list(zip(cond, results["controlnet"], target, strict=True))
        seen += take
        bar.update(take)
    bar.close()
    report: dict[str, Any] = {
        "task": task,
        "translator": str(translator),
        "n_tiles": seen,
        "steps": steps,
        "seed": seed,
        **{k: round(float(torch.cat(v).mean()), 4) for k, v in scores.items()},
    }
    if out_dir is not None:
        step = max(1, len(kept) // strip_tiles)
        chosen = kept[::step][:strip_tiles]
        labels = [f"{float(psnr(o[None], t[None])[0]):.1f} dB" for _, o, t in chosen]
        cond_name, target_name = TASKS[task]
        rows = [[c[0] for c in chosen], [c[1] for c in chosen], [c[2] for c in chosen]]
        grid = labelled_grid(
            rows, [f"input ({cond_name})", "ControlNet", f"target ({target_name})"], labels, cell_size=96
        )
        report["strip"] = str(save_png(grid, Path(out_dir) / f"{task}_strip.png"))
    return report


def markdown_table(reports: list[dict[str, Any]]) -> str:
    """One row per task: baseline, ControlNet and the VAE ceiling, PSNR (dB) / SSIM."""
    lines = [
        "| task | held-out tiles | baseline PSNR / SSIM | ControlNet PSNR / SSIM | VAE ceiling PSNR / SSIM |",
        "|---|---|---|---|---|",
    ]
    for r in reports:
        cells = [f"{r[f'{m}_psnr']:.2f} / {r[f'{m}_ssim']:.3f}" for m in ("baseline", "controlnet", "vae_ceiling")]
        lines.append(f"| {r['task']} | {r['n_tiles']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
