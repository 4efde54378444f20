"""Measure an enhancer on held-out tiles degraded by the training pipeline: bicubic vs network, PSNR/SSIM.

``python -m scripts.enhance_eval --checkpoint W --shards 'data/embedded/val-*.tar' --out DIR`` prints a
Markdown table and writes ``DIR/enhance_eval.json`` and a before/after strip ``DIR/enhance_strip.png``.
The pairs are exactly the validation pairs of training (same degradations, fixed by ``--seed`` and each key).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from text2earth.core.image_metrics import psnr, ssim
from text2earth.core.paths import project_root
from text2earth.io.images import labelled_grid, quantize_8bit, save_png
from text2earth.models.rrdbnet import load_rrdbnet
from text2earth.training.enhance_module import bicubic


@torch.inference_mode()
def evaluate(
    checkpoint: str | Path,
    shards: str,
    out_dir: str | Path,
    seed: int = 1234,
    batch_size: int = 64,
    strip_tiles: int = 8,
    progress: bool = True,
    save_inputs: bool = False,
    build_embedded_if_missing: str | None = None,
) -> dict[str, Any]:
    """Score bicubic and the network on every pair; return (and write) the mean figures overall and per source.

    ``save_inputs`` also writes the degraded inputs as ``out_dir/inputs/{source}/{key}.png`` (8-bit, exactly what
    the network saw), a ready folder for ``text2earth enhance --input-dir``; ``build_embedded_if_missing``: a
    folder where the embedded tiles are built first when missing (``ensure_embedded``)."""
    from data_modules.enhance import EnhanceDataModule

    net = load_rrdbnet(checkpoint)
    dm = EnhanceDataModule(
        shards, shards, build_embedded_if_missing, scale=net.scale, val_batch_size=batch_size, val_seed=seed
    )
    dm.setup("validate")
    scores: dict[str, dict[str, list[torch.Tensor]]] = defaultdict(lambda: defaultdict(list))
    keep: list[tuple] = []  # (key, source, lq, bicubic, network, target) for the strip
    start = time.perf_counter()
    for batch in tqdm(dm.val_dataloader(), desc="evaluate", disable=None if progress else True):
        lq, gt = batch["lq"], batch["gt"]
        outputs = {"bicubic": quantize_8bit(bicubic(lq, net.scale)), "rrdbnet": quantize_8bit(net(lq))}
        for name, pred in outputs.items():
            db, sim = psnr(pred, gt), ssim(pred, gt)
            for group in ("all", *sorted(set(batch["source"]))):
                mask = torch.tensor([group in ("all", s) for s in batch["source"]])
                scores[group][f"{name}_psnr"].append(db[mask])
                scores[group][f"{name}_ssim"].append(sim[mask])
        if save_inputs:
            for key, source, img in zip(batch["key"], batch["source"], lq, strict=True):
                save_png(img, Path(out_dir) / "inputs" / (source or "tiles") / f"{key}.png")
        keep += [
            (k, s, lq[i], outputs["bicubic"][i], outputs["rrdbnet"][i], gt[i])
            for i, (k, s) in enumerate(zip(batch["key"], batch["source"], strict=True))
        ]
    seconds = time.perf_counter() - start
    groups = {
        g: {"n": int(torch.cat(v["rrdbnet_psnr"]).numel()), **{m: float(torch.cat(t).mean()) for m, t in v.items()}}
        for g, v in scores.items()
    }
    report = {"checkpoint": str(checkpoint), "shards": shards, "seed": seed, "seconds": round(seconds, 1), **groups}

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "enhance_eval.json").write_text(json.dumps(report, indent=2))
    # Strip: tiles spread evenly over the (sorted-by-shard) held-out set, so every source shows up.
    step = max(1, len(keep) // strip_tiles)
    chosen = keep[::step][:strip_tiles]
    nearest = [F.interpolate(c[2][None], scale_factor=net.scale, mode="nearest")[0] for c in chosen]
    labels = []
    for _, _, _, bic, sr, gt in chosen:
        pb, ps = (float(psnr(x[None], gt[None])[0]) for x in (bic, sr))
        labels.append(f"PSNR bicubic {pb:.1f}, RRDBNet {ps:.1f} dB")
    rows = [nearest, [c[3] for c in chosen], [c[4] for c in chosen], [c[5] for c in chosen]]
    grid = labelled_grid(rows, ["input (x2 nearest)", "bicubic", "RRDBNet", "target"], labels, cell_size=128)
    report["strip"] = str(save_png(grid, out / "enhance_strip.png"))
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = ["| tiles | n | bicubic PSNR / SSIM | RRDBNet PSNR / SSIM | gain |", "|---|---|---|---|---|"]
    for group, r in report.items():
        if isinstance(r, dict):
            gain = r["rrdbnet_psnr"] - r["bicubic_psnr"]
            lines.append(
                f"| {group} | {r['n']} | {r['bicubic_psnr']:.2f} dB / {r['bicubic_ssim']:.4f} "
                f"| {r['rrdbnet_psnr']:.2f} dB / {r['rrdbnet_ssim']:.4f} | {gain:+.2f} dB |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.enhance_eval", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--shards", default=str(project_root() / "data/embedded/val-*.tar"))
    parser.add_argument("--out", default=str(project_root() / "outputs/enhance_eval"))
    parser.add_argument("--seed", type=int, default=1234, help="degradation seed (the data config's val_seed)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--save-inputs", action="store_true", help="write the degraded inputs to OUT/inputs/")
    parser.add_argument("--build-embedded-if-missing", default=None, help="build the embedded tiles here if needed")
    args = parser.parse_args(argv)
    try:
        report = evaluate(
            args.checkpoint,
            args.shards,
            args.out,
            args.seed,
            args.batch_size,
            save_inputs=args.save_inputs,
            build_embedded_if_missing=args.build_embedded_if_missing,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2
    print(markdown(report))
    print(f"report: {Path(args.out) / 'enhance_eval.json'}  strip: {report['strip']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
