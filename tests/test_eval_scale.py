"""Evaluation at full scale: zero-shot OA streams its images (memory flat in their number), level-error
figures come with their chance and majority-class floors."""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import numpy as np
import PIL.Image
import pytest

import text2earth.eval.classifier as classifier_module
from text2earth.eval.generation import GeneratedImage, LazyImages
from text2earth.eval.resolution_fidelity import in_level_range, level_errors
from text2earth.eval.zsoa import zero_shot_oa
from text2earth.io.images import save_png


class CountingImages(Sequence[PIL.Image.Image]):
    """``n`` images made on access (as files are read), counting how many are alive at once."""

    def __init__(self, n: int) -> None:
        self.n, self.refs, self.most_alive = n, [], 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.n))]
        shade = 40 if index % 2 else 200  # two classes, told apart by brightness
        pixels = np.random.default_rng(index).integers(0, 40, (48, 48, 3)) + shade
        image = PIL.Image.fromarray(pixels.astype(np.uint8))
        self.refs = [r for r in self.refs if r() is not None] + [weakref.ref(image)]
        self.most_alive = max(self.most_alive, len(self.refs))
        return image


def _run(n: int, monkeypatch) -> tuple[int, int, dict]:
    converted = []
    original = classifier_module.to_tensor

    def recording(images, image_size):
        converted.append(len(images))
        return original(images, image_size)

    monkeypatch.setattr(classifier_module, "to_tensor", recording)
    generated = CountingImages(n)
    labels = ["dark" if i % 2 else "bright" for i in range(n)]
    real = [generated[i] for i in range(6)]
    result = zero_shot_oa(generated, labels, real, labels[:6], image_size=32, epochs=1, batch_size=8, lr=1e-3)
    return generated.most_alive, max(converted), result


def test_zero_shot_oa_memory_stays_flat_as_the_images_grow(monkeypatch):
    small_alive, small_batch, small = _run(24, monkeypatch)
    large_alive, large_batch, large = _run(240, monkeypatch)
    # At most one batch of images exists at a time and at most one batch is converted to a tensor,
    # for 24 images as for 240 (the old code held all of them as one tensor).
    assert small_batch == large_batch == 8
    assert large_alive <= 8 + 6 and small_alive <= 8 + 6  # a batch + the 6 real images kept by the caller
    assert large["n_generated"] == 240 and 0 <= large["zero_shot_oa"] <= 100


def test_lazy_images_read_files_on_access(tmp_path):
    items = []
    for i in range(3):
        path = save_png(PIL.Image.new("RGB", (8, 8), (i * 50, 0, 0)), tmp_path / f"{i}.png", {})
        items.append(GeneratedImage(path, "c", 15.0, "x"))
    lazy = LazyImages(items)
    assert len(lazy) == 3 and lazy[2].getpixel((0, 0)) == (100, 0, 0)
    assert [im.getpixel((0, 0))[0] for im in lazy[0:2]] == [0, 50]


def test_level_errors_give_exact_accuracy_and_both_floors():
    classes = [10.0, 12.0, 14.0]
    train_levels = [12.0] * 5 + [10.0, 14.0]  # the majority class is 12
    result = level_errors([10.0, 12.0, 14.0, 14.0], [10.0, 12.4, 12.0, 14.0], classes, train_levels)
    assert result["exact_acc"] == 50.0  # 10 and the second 14; 12.4 is not class 12
    assert result["acc_within_0.5"] == 75.0
    assert result["chance"]["exact_acc"] == pytest.approx(100 / 3)
    assert result["chance"]["acc_within_0.5"] == pytest.approx(100 / 3)  # classes are 2 levels apart
    assert result["majority"]["level"] == 12.0
    assert result["majority"]["exact_acc"] == 25.0  # only the request for 12 is right
    assert result["majority"]["mae_level"] == pytest.approx((2 + 0 + 2 + 2) / 4)
    assert result["per_level"]["14.000"]["majority"]["exact_acc"] == 0.0
    assert result["per_level"]["12.000"]["chance"]["exact_acc"] == pytest.approx(100 / 3)


def test_estimator_tiles_are_kept_within_the_evaluated_levels():
    class Tile:
        def __init__(self, level: float) -> None:
            self.level = level

    kept = in_level_range([Tile(v) for v in (9.0, 10.6, 12.0, 13.4, 14.0)], (11.0, 13.0))
    assert [t.level for t in kept] == [10.6, 12.0, 13.4]
