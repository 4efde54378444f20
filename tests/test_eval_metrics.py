"""FID / KID through torchmetrics against plain numpy/scipy, the Inception loader, the feature cache, CLIP score."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import scipy.linalg
import torch

from text2earth.eval.features import DEFAULT_SHA1, FeatureExtractorError, default_inception_path, load_feature_extractor
from text2earth.eval.fid_kid import cached_features, fid_kid


def frechet_numpy(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula: |mu_a - mu_b|^2 + tr(S_a + S_b - 2 sqrt(S_a S_b))."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean))


def test_frechet_distance_matches_numpy_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 24))
    b = rng.normal(loc=0.3, scale=1.4, size=(250, 24)) @ rng.normal(size=(24, 24)) * 0.5
    got = fid_kid(torch.from_numpy(a), torch.from_numpy(b), kid_subsets=10, kid_subset_size=100)["fid"]
    want = frechet_numpy(a, b)
    assert want > 1.0
    assert got == pytest.approx(want, rel=1e-6)


def test_identical_sets_give_zero_fid_and_kid():
    features = torch.from_numpy(np.random.default_rng(1).normal(size=(200, 16)))
    same = fid_kid(features, features.clone(), kid_subsets=20, kid_subset_size=100)
    shifted = fid_kid(features, features + 0.5, kid_subsets=20, kid_subset_size=100)
    assert abs(same["fid"]) < 1e-6
    assert shifted["fid"] == pytest.approx(16 * 0.25, rel=1e-6)  # only the means differ
    # KID draws its real and fake subsets independently; shared points bias it slightly below zero.
    assert abs(same["kid_mean"]) < 0.1 * shifted["kid_mean"]
    assert same["kid_subset_size"] == 100


def test_feature_sets_of_different_width_are_refused():
    with pytest.raises(ValueError, match="same D"):
        fid_kid(torch.zeros(4, 8), torch.zeros(4, 9))


def test_inception_loader_checks_the_hash(tmp_path):
    assert default_inception_path().is_file()
    wrong = tmp_path / "default_1.pt"
    wrong.write_bytes(b"not the inception network")
    with pytest.raises(FeatureExtractorError, match="SHA-1"):
        load_feature_extractor(wrong, sha1=DEFAULT_SHA1)
    with pytest.raises(FeatureExtractorError, match="cannot load"):
        load_feature_extractor(wrong)  # no hash given: still a clear error, not a traceback
    with pytest.raises(FeatureExtractorError, match="does not exist"):
        load_feature_extractor(tmp_path / "missing.pt")


def _noisy(images, sigma, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for image in images:
        x = np.asarray(image).astype(np.float32) + rng.normal(scale=255 * sigma, size=(*image.size[::-1], 3))
        out.append(PIL.Image.fromarray(np.clip(x, 0, 255).astype(np.uint8)))
    return out


@pytest.mark.slow
def test_fid_grows_with_noise_on_real_tiles(embedded_shards):
    """The shipped Inception (SHA-1 checked) on real held-out tiles: more noise, larger FID."""
    from text2earth.eval.datasets import read_shard_tiles
    from text2earth.eval.fid_kid import extract_features

    extractor = load_feature_extractor()
    assert extractor.num_features == 2048
    tiles = [t.image for t in read_shard_tiles(f"{embedded_shards}/val-*.tar", limit=8, every=11)]
    real = extract_features(extractor, tiles, batch_size=8)
    fids = [fid_kid(real, extract_features(extractor, _noisy(tiles, s), 8), 5, 8)["fid"] for s in (0.05, 0.3)]
    assert 1.0 < fids[0] < fids[1]


class _MeanColour(torch.nn.Module):
    def forward(self, x):
        return torch.stack([x.mean((2, 3)), x.std((2, 3))], -1).flatten(1)


def test_real_features_are_cached_by_content(tmp_path):
    """A TorchScript feature network given by path; the second call reads the cache, new pixels do not."""
    path = tmp_path / "net.pt"
    torch.jit.script(_MeanColour()).save(str(path))
    extractor = load_feature_extractor(path)
    assert extractor.num_features == 6
    rng = np.random.default_rng(0)
    images = [PIL.Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)) for _ in range(5)]
    first, cached = cached_features(extractor, images, tmp_path / "cache")
    assert not cached
    again, cached = cached_features(extractor, images, tmp_path / "cache")
    assert cached and torch.equal(first, again)
    _, cached = cached_features(extractor, images[:4], tmp_path / "cache")
    assert not cached
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2


@pytest.fixture
def tiny_clip_folder(tmp_path):
    """A tiny random CLIP of the real transformers classes, saved as a local folder."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from text2earth.models.tokenizer import load_clip_tokenizer

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    tokenizer = load_clip_tokenizer()
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    folder = tmp_path / "tiny_clip"
    CLIPModel(config).save_pretrained(folder)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def test_clip_score_with_a_tiny_random_clip(tiny_clip_folder):
    from text2earth.eval.clip_score import clip_score, load_clip

    rng = np.random.default_rng(0)
    images = [PIL.Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)) for _ in range(3)]
    captions = ["a river", "farmland fields", "clouds over a forest"]
    result = clip_score(images, captions, tiny_clip_folder, batch_size=2)
    model, processor = load_clip(tiny_clip_folder)
    with torch.no_grad():
        img = model.model.get_image_features(**processor(images=images, return_tensors="pt")).pooler_output
        txt = model.model.get_text_features(**processor(text=captions, return_tensors="pt", padding=True)).pooler_output
    cos = torch.nn.functional.cosine_similarity(img, txt).clamp(min=0)
    assert result["clip_score"] == pytest.approx(float(100 * cos.mean()), rel=1e-4, abs=1e-4)
    assert result["n"] == 3 and result["model_type"] == "clip"


def test_clip_folder_must_exist(tmp_path):
    from text2earth.eval.clip_score import load_clip

    with pytest.raises(ValueError, match="config.json"):  # UserError: one line from the CLI
        load_clip(tmp_path)
