"""The evaluation report: a JSON file, a printed table, and an offline wandb run with image tables."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from text2earth.eval.generation import GeneratedImage
from text2earth.io.files import write_atomic

# (report section, key, printed name, format)
ROWS = (
    ("fid", "fid", "FID (Inception-v3, lower is better)", "{:.2f}"),
    ("fid", "kid_mean", "KID x 1000 (mean)", "{:.2f}"),
    ("clip", "clip_score", "CLIP score", "{:.2f}"),
    ("zsoa", "zero_shot_oa", "zero-shot OA %", "{:.2f}"),
    ("zsoa", "majority_class_oa", "  (always the commonest class: OA %)", "{:.2f}"),
    ("resolution", "real_reconstructions.exact_acc", "level exact class, real reconstructions %", "{:.1f}"),
    ("resolution", "generated.exact_acc", "level exact class, generated %", "{:.1f}"),
    ("resolution", "real_reconstructions.acc_within_0.5", "level acc. within 0.5, real reconstructions %", "{:.1f}"),
    ("resolution", "generated.acc_within_0.5", "level acc. within 0.5, generated %", "{:.1f}"),
    ("resolution", "real_reconstructions.mae_level", "mean abs. level error, real reconstructions", "{:.2f}"),
    ("resolution", "generated.mae_level", "mean abs. level error, generated", "{:.2f}"),
)


def _lookup(section: dict[str, Any], dotted: str) -> Any:
    value: Any = section
    for part in dotted.split(".", 1):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def table(report: dict[str, Any]) -> str:
    """The headline figures as a plain-text table (skipped metrics with their reason)."""
    lines = []
    for section, key, name, fmt in ROWS:
        value = _lookup(report["metrics"].get(section, {}), key)
        if value is not None:
            shown = fmt.format(value * 1000 if key == "kid_mean" else value)
            lines.append((name, shown))
    for section, reason in report.get("skipped", {}).items():
        lines.append((section, f"skipped: {reason}"))
    resolution = report["metrics"].get("resolution")
    if resolution:
        for level, gen in resolution["generated"]["per_level"].items():
            rec = resolution["real_reconstructions"]["per_level"].get(level)
            rec_text = f"{rec['acc_within_0.5']:.0f}%" if rec else "-"
            lines.append(
                (
                    f"  level {float(level):.2f}: within 0.5",
                    f"real rec. {rec_text}, generated {gen['acc_within_0.5']:.0f}%",
                )
            )
    width = max(len(name) for name, _ in lines) if lines else 10
    rule = "-" * (width + 24)
    body = "\n".join(f"{name:<{width}}  {value}" for name, value in lines)
    return f"{rule}\n{'metric':<{width}}  value\n{rule}\n{body}\n{rule}"


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    write_atomic(path, (json.dumps(report, indent=2, default=str) + "\n").encode())
    return path


def log_wandb(
    report: dict[str, Any],
    out_dir: str | Path,
    samples: dict[str, Sequence[GeneratedImage]],
    project: str = "text2earth",
    name: str = "evaluate",
    mode: str = "offline",
    max_rows: int = 64,
) -> str | None:
    """Log the figures and a table of sample images per generated set; returns the run folder."""
    import wandb

    run = wandb.init(project=project, name=name, dir=str(out_dir), mode=mode, config=report.get("settings", {}))
    try:
        summary = {}
        for section, values in report["metrics"].items():
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    summary[f"{section}/{key}"] = value
                elif isinstance(value, dict):
                    summary.update({f"{section}/{key}/{k}": v for k, v in value.items() if isinstance(v, (int, float))})
        run.log(summary)
        for set_name, images in samples.items():
            rows = wandb.Table(columns=["image", "caption", "level", "label"])
            for item in list(images)[:max_rows]:
                rows.add_data(wandb.Image(str(item.path)), item.caption, item.level, item.label)
            run.log({f"samples/{set_name}": rows})
        return run.dir
    finally:
        run.finish()
