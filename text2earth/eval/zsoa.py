"""Zero-shot overall accuracy (REFERENCE §4): a classifier trained on generated images only, tested on real.

Protocol: k generated images per test caption, each labelled with its source image's scene class; a
ResNet-18 (ImageNet-initialised when a local folder is given, else from scratch) trained 5 epochs with
Adam, lr 1e-4, batch 64; overall accuracy on the real test images.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import PIL.Image
import torch

from text2earth.eval.classifier import train_classifier


def zero_shot_oa(
    generated: Sequence[PIL.Image.Image],
    generated_labels: Sequence[str],
    real: Sequence[PIL.Image.Image],
    real_labels: Sequence[str],
    image_size: int = 224,
    epochs: int = 5,
    lr: float = 1e-4,
    batch_size: int = 64,
    seed: int = 0,
    pretrained: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Train on ``generated`` with their labels, report accuracy on ``real``; settings and seed included.

    ``generated`` may be a lazy sequence (:class:`~text2earth.eval.generation.LazyImages`): images are read
    one batch at a time, so memory stays flat however many there are. The classifier runs on ``device``.

    Real images whose class never appears among the generated labels count as errors (the classifier
    cannot name them), as in the published protocol where both sides cover the same classes.
    """
    if not real or len(real) != len(real_labels):
        raise ValueError(f"need real test images with labels (got {len(real)} images, {len(real_labels)} labels)")
    classifier = train_classifier(
        generated,
        generated_labels,
        image_size=image_size,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        pretrained=pretrained,
        desc="zero-shot OA",
        device=device,
    )
    predicted = classifier.predict(real)
    correct = [p == t for p, t in zip(predicted, real_labels, strict=True)]
    per_class: dict[str, list[bool]] = {}
    for ok, label in zip(correct, real_labels, strict=True):
        per_class.setdefault(label, []).append(ok)
    majority = Counter(generated_labels).most_common(1)[0][0]
    return {
        "zero_shot_oa": 100.0 * sum(correct) / len(correct),
        # What always answering the commonest generated class scores: the floor a useful OA must beat.
        "majority_class_oa": 100.0 * sum(t == majority for t in real_labels) / len(real_labels),
        "per_class_accuracy": {c: 100.0 * sum(v) / len(v) for c, v in sorted(per_class.items())},
        "n_generated": len(generated),
        "n_real": len(real),
        "classes": classifier.classes,
        "generated_class_counts": dict(Counter(generated_labels)),
        "classifier": "transformers ResNetForImageClassification, resnet-18 configuration",
        "init": classifier.init,
        "settings": {"image_size": image_size, "epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed},
        "train_loss_per_epoch": classifier.train_losses,
    }
