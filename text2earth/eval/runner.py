"""One evaluation run: real set -> generated sets (resumable) -> the chosen metrics -> report.

``cfg`` is the composed ``conf/evaluate.yaml`` (see there for every setting). The generated set for
FID / KID, CLIP score and zero-shot OA is ``images_per_caption`` images for each of the first
``captions_per_image`` captions of every real test image, at that image's level (RSICD: the configured
level), labelled with its scene class. Resolution fidelity has its own set: ``images_per_level`` images
at each requested level, with captions taken in turn from the real set.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from omegaconf import DictConfig

from text2earth.core.config import to_plain
from text2earth.core.resolution import describe, gsd_to_level
from text2earth.eval import report as reporting
from text2earth.eval.classifier import check_classifier_folder
from text2earth.eval.datasets import RealImage, read_rsicd, read_shard_tiles
from text2earth.eval.generation import EvalPrompt, GeneratedImage, LazyImages, generate_images, prompts_for
from text2earth.io.images import labelled_grid, save_png

METRICS = ("fid", "clip", "zsoa", "resolution")


def load_real(data: DictConfig) -> list[RealImage]:
    if data.kind == "rsicd":
        if not data.json:
            raise ValueError("RSICD evaluation needs the caption file: give eval_data.json=/path/to/dataset_rsicd.json")
        return read_rsicd(data.json, data.get("images_dir"), split=data.split, limit=data.get("limit"))
    if data.kind == "shards":
        return read_shard_tiles(data.real_shards, limit=data.get("limit"), every=data.get("every", 1))
    raise ValueError(f"eval_data.kind must be 'rsicd' or 'shards', got {data.kind!r}")


def _level_of(item: RealImage, data: DictConfig) -> float:
    fixed = data.get("level")
    return float(fixed) if fixed is not None else item.level


def main_set_prompts(real: list[RealImage], cfg: DictConfig) -> list[EvalPrompt]:
    captions, labels, levels = [], [], []
    for item in real:
        for caption in item.captions[: cfg.generation.captions_per_image]:
            captions.append(caption)
            labels.append(item.label)
            levels.append(_level_of(item, cfg.eval_data))
    return prompts_for(captions, labels, levels, cfg.generation.images_per_caption, cfg.seed, prefix="main_")


def resolution_prompts(real: list[RealImage], cfg: DictConfig) -> list[EvalPrompt]:
    levels = [gsd_to_level(g) for g in cfg.resolution.gsd_m for _ in range(cfg.resolution.images_per_level)]
    if not levels:
        raise ValueError("resolution.gsd_m is empty")
    captions = [real[i % len(real)].captions[0] for i in range(len(levels))]
    return prompts_for(captions, [f"{v:.3f}" for v in levels], levels, 1, cfg.seed, prefix="res_")


def evaluate_fid(ctx: dict[str, Any], cfg: DictConfig) -> dict[str, Any]:
    from text2earth.eval.features import load_feature_extractor
    from text2earth.eval.fid_kid import cached_features, extract_features, fid_kid

    extractor = load_feature_extractor(cfg.fid.feature_extractor, cfg.fid.sha1)
    real_features, was_cached = cached_features(
        extractor, [r.image for r in ctx["real"]], cfg.fid.cache_dir, cfg.fid.batch_size, device=ctx["device"]
    )
    fake = LazyImages(ctx["main"])
    fake_features = extract_features(extractor, fake, cfg.fid.batch_size, "generated features", ctx["device"])
    result = fid_kid(real_features, fake_features, cfg.fid.kid_subsets, cfg.fid.kid_subset_size, cfg.seed)
    return {**result, "feature_extractor": extractor.name, "real_features_cached": was_cached}


def evaluate_clip(ctx: dict[str, Any], cfg: DictConfig) -> dict[str, Any]:
    from text2earth.eval.clip_score import clip_score

    main = ctx["main"]
    return clip_score(
        LazyImages(main), [g.caption for g in main], cfg.clip.model, cfg.clip.batch_size, device=ctx["device"]
    )


def evaluate_zsoa(ctx: dict[str, Any], cfg: DictConfig) -> dict[str, Any]:
    from text2earth.eval.zsoa import zero_shot_oa

    labelled = [r for r in ctx["real"] if r.label]
    if not labelled:
        raise ValueError("zero-shot OA needs scene classes for the real images (none found)")
    generated = [g for g in ctx["main"] if g.label]
    z = cfg.zsoa
    return zero_shot_oa(
        LazyImages(generated),
        [g.label for g in generated],
        [r.image for r in labelled],
        [r.label for r in labelled],
        image_size=z.image_size,
        epochs=z.epochs,
        lr=z.lr,
        batch_size=z.batch_size,
        seed=cfg.seed,
        pretrained=z.pretrained,
        device=ctx["device"],
    )


def evaluate_resolution(ctx: dict[str, Any], cfg: DictConfig) -> dict[str, Any]:
    from text2earth.eval.resolution_fidelity import (
        estimate_levels,
        estimator_for_autoencoder,
        in_level_range,
        level_errors,
        reconstruct,
    )

    r, e = cfg.resolution, cfg.resolution.estimator
    pipe = ctx["pipe"]
    vae = pipe.vae
    generated: list[GeneratedImage] = ctx["resolution"]
    # The estimator sees what the model makes: its image size, and only the levels it is asked for.
    image_size = e.image_size or pipe.unet.config.sample_size * pipe.vae_scale_factor
    level_range = (min(g.level for g in generated), max(g.level for g in generated))
    estimator, train_levels = estimator_for_autoencoder(
        vae,
        r.train_shards,
        r.train_every,
        image_size,
        e.epochs,
        e.lr,
        e.batch_size,
        cfg.seed,
        level_range=level_range,
        device=ctx["device"],
    )
    held_out = in_level_range(read_shard_tiles(r.test_shards, every=r.test_every), level_range)
    test_rec = reconstruct(vae, [t.image for t in held_out])
    gen_images = [g.load() for g in generated]
    gen_estimates = estimate_levels(estimator, gen_images)
    rec_estimates = estimate_levels(estimator, test_rec)
    classes = [float(c) for c in estimator.classes]
    result = {
        "real_reconstructions": level_errors([t.level for t in held_out], rec_estimates, classes, train_levels),
        "generated": level_errors([g.level for g in generated], gen_estimates, classes, train_levels),
        "estimator": {
            "classes": estimator.classes,
            "image_size": image_size,
            "level_range": list(level_range),
            "trained_on": f"{len(train_levels)} real tiles of {r.train_shards} through the model's autoencoder",
            "tested_on": f"{len(held_out)} held-out tiles of {r.test_shards} through the same autoencoder",
            "init": estimator.init,
            "train_loss_per_epoch": estimator.train_losses,
        },
    }
    result["figure"] = str(resolution_figure(generated, gen_images, gen_estimates, held_out, test_rec, ctx["out"]))
    return result


def resolution_figure(
    generated, gen_images, gen_estimates, held_out, test_rec, out_dir: Path, per_side: int = 4
) -> Path:
    """Rows = requested levels: real reconstructions of that level (blank where none), then generated images."""
    blank = PIL.Image.new("RGB", gen_images[0].size, (255, 255, 255))
    rows, labels = [], []
    for level in sorted({g.level for g in generated}):
        gen = [(im, est) for g, im, est in zip(generated, gen_images, gen_estimates, strict=True) if g.level == level]
        rec = [im for t, im in zip(held_out, test_rec, strict=True) if abs(t.level - level) < 1e-3][:per_side]
        hits = sum(abs(est - level) <= 0.5 for _, est in gen)
        shown = [im for im, _ in gen[:per_side]]
        rows.append(rec + [blank] * (per_side - len(rec)) + shown + [blank] * (per_side - len(shown)))
        labels.append(f"{describe(level)}: {hits}/{len(gen)} generated judged within 0.5 level")
    columns = ["real reconstruction"] * per_side + ["generated"] * per_side
    grid = labelled_grid(rows, row_labels=labels, col_labels=columns, cell_size=96)
    return save_png(grid, out_dir / "resolution_fidelity.png", {"what": "rows: requested level"})


EVALUATORS = {"fid": evaluate_fid, "clip": evaluate_clip, "zsoa": evaluate_zsoa, "resolution": evaluate_resolution}


def run_evaluation(cfg: DictConfig) -> dict[str, Any]:
    """Generate what is missing, compute ``cfg.metrics``, write ``report.json``, log to wandb; the report."""
    from text2earth.io.device import inference_dtype, pick_device
    from text2earth.models.components import check_model_folder
    from text2earth.pipelines.text2img import Text2EarthPipeline

    metrics = list(cfg.metrics)
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of {list(METRICS)}, got {metrics}")
    check_model_folder(cfg.model_dir)  # before the real images are read
    out = Path(cfg.out_dir)
    device = pick_device(cfg.get("device"))
    torch.manual_seed(cfg.seed)
    skipped = {}
    if "clip" in metrics and not cfg.clip.model:
        skipped["clip"] = "no local CLIP/SigLIP folder given (clip.model=/path/to/Git-RSCLIP)"
        metrics.remove("clip")
    if "zsoa" in metrics and cfg.zsoa.get("pretrained"):
        check_classifier_folder(cfg.zsoa.pretrained)  # before generation and FID, not after them
    start = time.perf_counter()
    real = load_real(cfg.eval_data)
    dtype = inference_dtype(device)
    pipe = Text2EarthPipeline.from_pretrained(cfg.model_dir, scheduler=cfg.generation.scheduler, torch_dtype=dtype)
    pipe = pipe.to(device)
    g = cfg.generation
    ctx: dict[str, Any] = {"real": real, "pipe": pipe, "device": device, "out": out}
    samples = {}
    if set(metrics) & {"fid", "clip", "zsoa"}:
        ctx["main"] = generate_images(
            pipe,
            main_set_prompts(real, cfg),
            out / "generated",
            g.batch_size,
            g.steps,
            g.guidance,
            "generating (main)",
            g.level_guidance,
        )
        samples["main"] = ctx["main"]
    if "resolution" in metrics:
        ctx["resolution"] = generate_images(
            pipe,
            resolution_prompts(real, cfg),
            out / "generated",
            g.batch_size,
            g.steps,
            g.guidance,
            "generating (levels)",
            g.level_guidance,
        )
        samples["resolution"] = ctx["resolution"]
    results = {}
    for name in metrics:
        results[name] = EVALUATORS[name](ctx, cfg)
    report = {
        "model": str(cfg.model_dir),
        "n_real": len(real),
        "metrics": results,
        "skipped": skipped,
        "wall_s": round(time.perf_counter() - start, 1),
        "device": str(device),
        "settings": to_plain(cfg),
    }
    reporting.write_json(report, out / cfg.report_name)
    if cfg.wandb.enabled:
        report["wandb_dir"] = reporting.log_wandb(
            report, out, samples, project=cfg.wandb.project, name=cfg.task_name, mode=cfg.wandb.mode
        )
        reporting.write_json(report, out / cfg.report_name)
    return report
