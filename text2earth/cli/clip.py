"""``text2earth clip classify|retrieve``: zero-shot classification and retrieval with a Git-RSCLIP / SigLIP / CLIP folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from text2earth.core.errors import UserError


def _write_json(path: Path, report: dict[str, Any]) -> None:
    from text2earth.io.files import write_atomic

    write_atomic(path, (json.dumps(report, indent=2) + "\n").encode())


def _descriptions(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--descriptions: no file {path!r}")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"--descriptions: {path} is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"--descriptions: {path} must map class names to a prompt or a list of prompts")
    return data


def _classify(args: argparse.Namespace) -> int:
    from text2earth.eval.zero_shot import DEFAULT_TEMPLATES, classify_folder, confusion_image, read_class_folders
    from text2earth.io.device import pick_device
    from text2earth.io.files import atomic_path
    from text2earth.models.rsclip import load_image_text_model

    dataset = read_class_folders(args.dataset, args.limit_per_class)  # bad folders fail before the model loads
    descriptions = _descriptions(args.descriptions)
    model = load_image_text_model(args.model, device=pick_device(args.device))
    report = classify_folder(model, dataset, args.template or DEFAULT_TEMPLATES, descriptions, args.batch_size)
    report["model"] = str(args.model)
    out = Path(args.out)
    _write_json(out / "zero_shot.json", report)
    with atomic_path(out / "confusion.png") as tmp:
        confusion_image(report["confusion"], report["classes"]).save(tmp, format="PNG")
    print(
        f"{report['n_images']} images, {len(report['classes'])} classes: top-1 {100 * report['top1']:.2f}%  "
        f"top-5 {100 * report['top5']:.2f}%  (chance {100 * report['chance_top1']:.2f}%, "
        f"majority class {100 * report['majority_top1']:.2f}%; skipped {report['skipped']} unreadable images)"
    )
    print(f"wrote {out / 'zero_shot.json'} and {out / 'confusion.png'}")
    return 0


def _retrieve(args: argparse.Namespace) -> int:
    from text2earth.eval.retrieval import RECALL_AT, retrieval_report
    from text2earth.io.device import pick_device
    from text2earth.models.rsclip import load_image_text_model

    if not Path(args.captions).is_file():
        raise UserError(f"caption file {args.captions!r} does not exist (give dataset_rsicd.json or RSITMD's)")
    model = load_image_text_model(args.model, device=pick_device(args.device))
    split = None if args.split == "all" else args.split
    report = retrieval_report(model, args.captions, args.images, split, args.limit, args.batch_size)
    report["model"] = str(args.model)
    for direction in ("i2t", "t2i"):
        recalls = "  ".join(f"R@{k} {report[f'{direction}_R@{k}']:.2f}" for k in RECALL_AT)
        print(f"{direction}: {recalls}")
    print(
        f"mean recall {report['mean_recall']:.2f}  ({report['n_images']} images, {report['n_texts']} captions; "
        f"skipped {report['skipped_images']} unreadable images)"
    )
    if args.out:
        _write_json(Path(args.out), report)
        print(f"wrote {args.out}")
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``clip classify`` and ``clip retrieve``."""
    clip = subparsers.add_parser("clip", help="Git-RSCLIP / SigLIP / CLIP: zero-shot classification and retrieval")
    sub = clip.add_subparsers(dest="clip_command", required=True)

    classify = sub.add_parser("classify", help="zero-shot top-1/top-5 on a folder of class subfolders")
    classify.add_argument("dataset", help="folder of class subfolders (AID, RESISC45, UCM, WHU-RS19, EuroSAT layout)")
    classify.add_argument("--model", required=True, help="local SiglipModel / CLIPModel folder (e.g. Git-RSCLIP)")
    classify.add_argument(
        "--template",
        action="append",
        help="prompt template with {} for the class name (repeat to ensemble; default 'a remote sensing image of {}.')",
    )
    classify.add_argument(
        "--descriptions", default=None, help="JSON file: class name -> prompt or list of prompts (overrides templates)"
    )
    classify.add_argument("--limit-per-class", type=int, default=None, help="at most this many images per class")
    classify.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    classify.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    classify.add_argument("--out", required=True, help="output folder for zero_shot.json and confusion.png")
    classify.set_defaults(func=_classify)

    retrieve = sub.add_parser("retrieve", help="image<->text R@1/5/10 and mean recall (RSICD / RSITMD json)")
    retrieve.add_argument(
        "captions", help="Karpathy-style caption file (dataset_rsicd.json, RSITMD's dataset_RSITMD.json)"
    )
    retrieve.add_argument("--model", required=True, help="local SiglipModel / CLIPModel folder (e.g. Git-RSCLIP)")
    retrieve.add_argument(
        "--images", default=None, help="image folder (default: RSICD_images/ or images/ beside the json)"
    )
    retrieve.add_argument("--split", default="test", help="split to use (train | val | test | all)")
    retrieve.add_argument("--limit", type=int, default=None, help="at most this many images")
    retrieve.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    retrieve.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    retrieve.add_argument("--out", default=None, help="JSON report file (optional)")
    retrieve.set_defaults(func=_retrieve)
