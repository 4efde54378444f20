"""Zero-shot scene classification with an image-text model on a folder of class subfolders.

The layout of AID, RESISC45, UCM, WHU-RS19, RSSCN7, OPTIMAL-31 and EuroSAT RGB: ``DATASET/CLASS/*.jpg``. Each
class is described by prompt templates (``"a remote sensing image of {}."``, the class name with ``_`` as
spaces) or by descriptions given per class; several prompts per class are averaged in embedding space (the
usual prompt ensemble). Unreadable images are skipped and counted; an empty class subfolder stays a
candidate (the model may still answer it) and is listed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from PIL import ImageDraw
from tqdm.auto import tqdm

from text2earth.core.errors import UserError
from text2earth.io.images import ImageReadError, load_font, load_rgb
from text2earth.models.rsclip import ImageTextModel

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"}
DEFAULT_TEMPLATES = ("a remote sensing image of {}.",)


@dataclass
class FolderDataset:
    """A class-subfolder dataset: sorted class names and (image path, class index) items."""

    root: Path
    classes: list[str]
    items: list[tuple[Path, int]]
    empty_classes: list[str] = field(default_factory=list)


def read_class_folders(root: str | Path, limit_per_class: int | None = None) -> FolderDataset:
    """The classes (subfolder names, sorted) and image files of ``root``; a clear error when it has none."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset folder {str(root)!r} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise UserError(
            f"dataset folder {str(root)!r} has {len(classes)} class subfolder(s); expected DATASET/CLASS/image "
            "files with at least two classes"
        )
    items, empty = [], []
    for index, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            empty.append(name)
        items += [(p, index) for p in files[:limit_per_class]]
    if not items:
        raise UserError(f"dataset folder {str(root)!r} has no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    for name in empty:
        log.warning("class %r has no images: it stays a candidate class, with no test images", name)
    return FolderDataset(root, classes, items, empty)


def class_prompts(
    classes: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES, descriptions: Mapping[str, Any] | None = None
) -> list[list[str]]:
    """The prompts of each class: its own descriptions when given, else every template with its name."""
    if not templates or any("{}" not in t for t in templates):
        raise UserError(f"every prompt template needs a '{{}}' for the class name, got {list(templates)}")
    prompts = []
    for name in classes:
        given = (descriptions or {}).get(name)
        if given:
            prompts.append([given] if isinstance(given, str) else list(given))
        else:
            prompts.append([t.format(name.replace("_", " ")) for t in templates])
    return prompts


def class_embeddings(model: ImageTextModel, prompts: Sequence[Sequence[str]]) -> torch.Tensor:
    """One L2-normalised text embedding per class: the mean of its prompts' embeddings."""
    flat = [p for group in prompts for p in group]
    embeds = model.embed_texts(flat)
    out, start = [], 0
    for group in prompts:
        out.append(embeds[start : start + len(group)].mean(dim=0))
        start += len(group)
    return F.normalize(torch.stack(out), dim=-1)


def load_images(paths: Sequence[Path]) -> tuple[list[PIL.Image.Image], list[int], list[str]]:
    """The readable images, their positions in ``paths``, and one line per skipped file."""
    images, kept, skipped = [], [], []
    for i, path in enumerate(paths):
        try:
            images.append(load_rgb(path))
            kept.append(i)
        except (ImageReadError, OSError) as exc:
            skipped.append(f"{path}: {exc}")
    return images, kept, skipped


def accuracy_report(logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> dict[str, Any]:
    """Top-1 / top-5 accuracy, per-class accuracy and the confusion matrix (rows: true, columns: predicted)."""
    n_classes = len(classes)
    top = logits.topk(min(5, n_classes), dim=1).indices
    top1 = (top[:, 0] == labels).float()
    top5 = (top == labels[:, None]).any(dim=1).float()
    confusion = torch.zeros(n_classes, n_classes, dtype=torch.long)
    confusion.index_put_((labels, top[:, 0]), torch.ones_like(labels), accumulate=True)
    counts = confusion.sum(dim=1)
    per_class = {c: (float(confusion[i, i] / counts[i]) if counts[i] else None) for i, c in enumerate(classes)}
    majority = int(counts.argmax())
    return {
        "top1": float(top1.mean()),
        "top5": float(top5.mean()),
        "chance_top1": 1.0 / n_classes,
        # Always answering the commonest class: the floor for unbalanced sets.
        "majority_top1": float(counts[majority] / counts.sum()),
        "per_class_top1": per_class,
        "confusion": confusion.tolist(),
        "classes": list(classes),
        "n_images": int(len(labels)),
    }


def classify_folder(
    model: ImageTextModel,
    dataset: FolderDataset,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    descriptions: Mapping[str, Any] | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Zero-shot classification of every image of ``dataset``: the report :func:`accuracy_report` gives, plus
    the prompts, the skipped files and the model's kind."""
    prompts = class_prompts(dataset.classes, templates, descriptions)
    texts = class_embeddings(model, prompts)
    logits, labels, skipped = [], [], []
    for start in tqdm(range(0, len(dataset.items), batch_size), desc="zero-shot", unit="batch"):
        chunk = dataset.items[start : start + batch_size]
        images, kept, bad = load_images([p for p, _ in chunk])
        skipped += bad
        if images:
            logits.append(model.logits(model.embed_images(images, batch_size), texts))
            labels += [chunk[i][1] for i in kept]
    for line in skipped:
        log.warning("skipped unreadable image %s", line)
    if not labels:
        raise UserError(f"no readable images in {dataset.root} ({len(skipped)} skipped)")
    report = accuracy_report(torch.cat(logits), torch.tensor(labels), dataset.classes)
    report.update(
        dataset=str(dataset.root),
        model_type=model.kind,
        prompts=dict(zip(dataset.classes, prompts, strict=True)),
        empty_classes=dataset.empty_classes,
        skipped=len(skipped),
        skipped_files=skipped,
    )
    return report


def confusion_image(confusion: Sequence[Sequence[int]], classes: Sequence[str], cell: int = 28) -> PIL.Image.Image:
    """The row-normalised confusion matrix as a labelled heat map (white 0 -> dark blue 1), counts in cells."""
    matrix = np.asarray(confusion, dtype=np.float64)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    font = load_font(12)
    probe = ImageDraw.Draw(PIL.Image.new("RGB", (1, 1)))
    label_w = max(int(probe.textlength(c, font=font)) for c in classes) + 10
    n = len(classes)
    size = (label_w + n * cell + 10, label_w + n * cell + 30)
    image = PIL.Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    top = label_w + 20
    draw.text((label_w, 2), "predicted ->   (rows: true class)", fill="black", font=font)
    for i, name in enumerate(classes):
        draw.text((4, top + i * cell + cell // 3), name, fill="black", font=font)
        column = PIL.Image.new("RGBA", (label_w, cell), (255, 255, 255, 0))
        ImageDraw.Draw(column).text((4, cell // 3), name, fill="black", font=font)
        image.paste(column.rotate(90, expand=True), (label_w + i * cell, 18), column.rotate(90, expand=True))
        for j in range(n):
            r = rates[i, j]
            colour = (int(255 - 225 * r), int(255 - 185 * r), int(255 - 80 * r))
            x, y = label_w + j * cell, top + i * cell
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=colour, outline=(200, 200, 200))
            if matrix[i, j]:
                text = str(int(matrix[i, j]))
                draw.text((x + 3, y + cell // 3), text, fill="white" if r > 0.5 else "black", font=font)
    return image
