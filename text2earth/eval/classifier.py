"""The one image classifier the evaluation trains: transformers' ``ResNetForImageClassification``.

Zero-shot OA trains it (the ResNet-18 configuration) on generated images; resolution fidelity trains a
smaller configuration of the same class as a level estimator. Weights come from a local folder
(e.g. ImageNet ResNet-18 in the transformers layout) or are random; the result says which.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import PIL.Image
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import ResNetConfig, ResNetForImageClassification

from text2earth.io.images import normalise_uint8, stack_uint8

# ImageNet statistics: what pretrained ResNets expect, harmless for a from-scratch one.
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
# The torchvision / timm ResNet-18 layout in transformers' terms.
RESNET18 = {"embedding_size": 64, "hidden_sizes": [64, 128, 256, 512], "depths": [2, 2, 2, 2], "layer_type": "basic"}


@dataclass
class TrainedClassifier:
    model: ResNetForImageClassification
    classes: list[str]
    image_size: int
    init: str  # "pretrained:<folder>" or "scratch"
    train_losses: list[float]

    @torch.no_grad()
    def logits(self, images: Sequence[PIL.Image.Image], batch_size: int = 128) -> torch.Tensor:
        """``N, classes`` on the CPU; ``images`` are read and converted one batch at a time."""
        self.model.eval()
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(images), batch_size):
            x = to_tensor(images[start : start + batch_size], self.image_size).to(device)
            out.append(self.model(pixel_values=x).logits.float().cpu())
        return torch.cat(out)

    def predict(self, images: Sequence[PIL.Image.Image], batch_size: int = 128) -> list[str]:
        return [self.classes[i] for i in self.logits(images, batch_size).argmax(-1).tolist()]


def to_tensor(images: Sequence[PIL.Image.Image], image_size: int) -> torch.Tensor:
    """Normalised float ``N,3,S,S`` (bicubic resize to ``image_size``)."""
    return (normalise_uint8(stack_uint8(images, image_size), (0.0, 1.0)) - MEAN) / STD


def check_classifier_folder(pretrained: str | Path) -> Path:
    """The folder of a pretrained classifier, or FileNotFoundError saying what belongs there."""
    folder = Path(pretrained)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"pretrained classifier folder {str(folder)!r} has no config.json "
            "(save a transformers ResNetForImageClassification there, e.g. microsoft/resnet-18)"
        )
    return folder


def build_resnet(
    num_labels: int, pretrained: str | Path | None = None, architecture: dict | None = None
) -> tuple[ResNetForImageClassification, str]:
    """A ResNet classifier with a fresh ``num_labels`` head; ``(model, init)`` with ``init`` for the report."""
    if pretrained is not None:
        folder = check_classifier_folder(pretrained)
        model = ResNetForImageClassification.from_pretrained(
            folder, num_labels=num_labels, ignore_mismatched_sizes=True, local_files_only=True
        )
        return model, f"pretrained:{folder}"
    config = ResNetConfig(num_labels=num_labels, **(architecture or RESNET18))
    return ResNetForImageClassification(config), "scratch"


def train_classifier(
    images: Sequence[PIL.Image.Image],
    labels: Sequence[str],
    image_size: int,
    epochs: int = 5,
    lr: float = 1e-4,
    batch_size: int = 64,
    seed: int = 0,
    pretrained: str | Path | None = None,
    architecture: dict | None = None,
    classes: Sequence[str] | None = None,
    desc: str = "classifier",
    device: str | torch.device = "cpu",
) -> TrainedClassifier:
    """Adam on cross-entropy over ``classes`` (default: the sorted labels seen), a progress bar per epoch.

    ``images`` may be a lazy sequence (e.g. files loaded on access): each batch is read and converted
    when it is used, so memory stays that of one batch whatever the number of images (54,650 generated
    RSICD images stacked at 224 px would be ~33 GB). The model trains on ``device``.
    """
    if len(images) != len(labels) or not images:
        raise ValueError(f"need as many labels as images (got {len(images)} images, {len(labels)} labels)")
    classes = sorted(set(labels)) if classes is None else list(classes)
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the classes {classes}")
    with torch.random.fork_rng():  # seeded init without disturbing the caller's random stream (training runs)
        torch.manual_seed(seed)
        model, init = build_resnet(len(classes), pretrained, architecture)
    model.to(device)
    y_all = torch.tensor([index[label] for label in labels])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    with torch.enable_grad():  # callers may sit inside no_grad (a training callback's evaluation)
        losses = _fit(model, optimizer, images, image_size, y_all, epochs, batch_size, generator, desc)
    model.eval()
    return TrainedClassifier(model, classes, image_size, init, losses)


def _fit(model, optimizer, images, image_size, y_all, epochs, batch_size, generator, desc) -> list[float]:
    device = next(model.parameters()).device
    losses = []
    for epoch in range(epochs):
        order = torch.randperm(len(y_all), generator=generator)
        total = 0.0
        for start in tqdm(range(0, len(order), batch_size), desc=f"{desc} epoch {epoch + 1}/{epochs}", leave=False):
            idx = order[start : start + batch_size]
            x = to_tensor([images[i] for i in idx.tolist()], image_size).to(device)
            loss = F.cross_entropy(model(pixel_values=x).logits, y_all[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(order))
    return losses
