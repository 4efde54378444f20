import json

import pytest
import torch
from diffusers import UNet2DConditionModel

from text2earth.models.components import (
    ModelFolderError,
    add_level_embedding,
    build_components,
    check_model_folder,
    count_parameters,
    load_from_folder,
    load_from_sd2,
)
from text2earth.models.presets import get_preset


def test_published_architecture_parameter_count():
    counts = count_parameters("text2earth_sd2")
    assert counts["unet"] == pytest.approx(868.0e6, rel=1e-3)
    assert counts["vae"] == pytest.approx(83.7e6, rel=1e-3)
    assert counts["text_encoder"] == pytest.approx(340.4e6, rel=1e-3)
    assert counts["total"] == pytest.approx(1.292e9, rel=1e-3)
    unet = get_preset("text2earth_sd2")["unet"]
    assert unet["class_embed_type"] == "timestep" and unet["cross_attention_dim"] == 1024


def _save_sd2_like(tmp_path, components):
    """A folder in the SD2 layout: the tiny UNet *without* a class embedding."""
    config = dict(components.unet.config)
    config["class_embed_type"] = None
    torch.manual_seed(1)
    sd2_unet = UNet2DConditionModel.from_config(config)
    folder = tmp_path / "sd2"
    sd2_unet.save_pretrained(folder / "unet")
    components.vae.save_pretrained(folder / "vae")
    components.text_encoder.save_pretrained(folder / "text_encoder")
    components.tokenizer.save_pretrained(folder / "tokenizer")
    components.scheduler.save_pretrained(folder / "scheduler")
    return folder, sd2_unet


def test_sd2_init_computes_exactly_what_sd2_computes(tmp_path, tiny_components):
    folder, sd2_unet = _save_sd2_like(tmp_path, tiny_components)
    loaded = load_from_sd2(folder, level_scale=100.0)
    assert loaded.unet.config.class_embed_type == "timestep"
    assert loaded.level_scale == 100.0
    x = torch.randn(3, 4, 16, 16)
    t = torch.tensor([10, 500, 999])
    text = torch.randn(3, 77, 64)
    with torch.no_grad():
        reference = sd2_unet(x, t, encoder_hidden_states=text).sample
        for labels in ([0.0, 0.0, 0.0], [1700.0, 1200.0, 1350.0]):
            out = loaded.unet(x, t, encoder_hidden_states=text, class_labels=torch.tensor(labels)).sample
            torch.testing.assert_close(out, reference, rtol=0, atol=0)
    # ... and the level embedding is trainable: one gradient step makes the level matter.
    assert loaded.unet.class_embedding.linear_2.weight.abs().sum() == 0
    loss = loaded.unet(x, t, encoder_hidden_states=text, class_labels=torch.tensor([1700.0] * 3)).sample.pow(2).mean()
    loss.backward()
    assert loaded.unet.class_embedding.linear_2.weight.grad.abs().sum() > 0


def test_add_level_embedding_refuses_double(tiny_components):
    with pytest.raises(ValueError, match="already has a class embedding"):
        add_level_embedding(tiny_components.unet)


def test_plain_sd2_folder_is_not_a_text2earth_folder(tmp_path, tiny_components):
    folder, _ = _save_sd2_like(tmp_path, tiny_components)
    with pytest.raises(ModelFolderError, match="sd2_folder"):
        load_from_folder(folder)


def test_folder_errors(tmp_path):
    with pytest.raises(ModelFolderError, match="looks like a hub id"):
        check_model_folder("lcybuaa/Text2Earth")
    with pytest.raises(ModelFolderError, match="does not exist"):
        check_model_folder(tmp_path / "nope")
    (tmp_path / "half" / "unet").mkdir(parents=True)
    with pytest.raises(ModelFolderError, match="missing vae/, text_encoder/, tokenizer/, scheduler/"):
        check_model_folder(tmp_path / "half")


def test_build_components_options(tmp_path, tiny_components):
    with pytest.raises(ValueError, match="exactly one"):
        build_components(preset="tiny", folder="x")
    tiny_components.vae.save_pretrained(tmp_path / "vae")
    parts = build_components(preset="tiny", vae_folder=str(tmp_path), prediction_type="v_prediction", level_scale=3.0)
    assert parts.scheduler.config.prediction_type == "v_prediction"
    assert parts.level_scale == 3.0
    assert json.loads((tmp_path / "vae" / "config.json").read_text())["latent_channels"] == 4
    with pytest.raises(ValueError, match="unknown model preset"):
        build_components(preset="huge")
