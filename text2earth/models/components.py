"""Build or load the four parts of a Text2Earth model: VAE, text encoder (+tokenizer), UNet, scheduler.

Three sources, one result (:class:`Components`):
- a preset from :mod:`text2earth.models.presets`, random weights (training from scratch);
- a local folder in the published diffusers layout (``unet/ vae/ text_encoder/ tokenizer/ scheduler/``),
  whatever pipeline class its ``model_index.json`` names;
- a local Stable Diffusion 2 folder, to which the zoom-level embedding is added with its last layer
  zero-initialised, so the model starts out computing exactly what SD2 computes.
Nothing here touches the network: a hub id without a local copy fails at once with a hint.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.models.embeddings import TimestepEmbedding
from safetensors import SafetensorError
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from text2earth.core.errors import UserError
from text2earth.models.inpainting import inpainting_unet_from, is_inpainting_unet
from text2earth.models.presets import SCHEDULER, get_preset
from text2earth.models.tokenizer import load_clip_tokenizer

SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
# The sampler every exported folder carries as pipeline.py: plain diffusers loads it with
# DiffusionPipeline.from_pretrained(folder, custom_pipeline=str(folder / "pipeline.py"), trust_remote_code=True).
STANDALONE_PIPELINE = Path(__file__).resolve().parent.parent / "assets" / "diffusers_pipeline.py"


class ModelFolderError(UserError):
    """A model folder that is missing, incomplete, or names a hub repository."""


@dataclass
class Components:
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    unet: UNet2DConditionModel
    scheduler: Any
    # Multiplies the zoom level before the UNet's sinusoidal class embedding; 1.0 is the published model.
    level_scale: float = 1.0

    def parameter_counts(self) -> dict[str, int]:
        counts = {
            name: sum(p.numel() for p in getattr(self, name).parameters()) for name in ("unet", "vae", "text_encoder")
        }
        counts["total"] = sum(counts.values())
        return counts


@contextlib.contextmanager
def reading_weights(folder: str | Path) -> Iterator[None]:
    """Turn what the loaders raise for damaged files (truncated or garbage safetensors, a config that is not
    JSON or names impossible values, a weights file that is a folder) into one :class:`ModelFolderError` line."""
    try:
        yield
    except UserError:
        raise
    except (OSError, ValueError, RuntimeError, TypeError, KeyError, SafetensorError) as exc:
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ModelFolderError(
            f"model folder {str(folder)!r} cannot be read (a damaged or incomplete file: {reason}); "
            "re-export or re-download it"
        ) from None


def check_model_folder(folder: str | Path, parts: tuple[str, ...] = SUBFOLDERS) -> Path:
    """The folder as a Path, or a one-line :class:`ModelFolderError` saying what is wrong."""
    path = Path(folder).expanduser()
    if not path.exists():
        text = str(folder)
        if text.count("/") == 1 and not text.startswith((".", "/", "~")):
            raise ModelFolderError(
                f"{text!r} looks like a hub id, and this project never downloads at run time: fetch it once "
                f"(e.g. `huggingface-cli download {text} --local-dir models/{text.split('/')[-1]}`) and pass that folder"
            )
        raise ModelFolderError(f"model folder {text!r} does not exist")
    if not path.is_dir():
        raise ModelFolderError(f"model folder {str(folder)!r} is a file, not a folder")
    missing = [p for p in parts if not (path / p).is_dir()]
    if missing:
        raise ModelFolderError(
            f"{path} is not a Text2Earth/diffusers model folder: missing {', '.join(p + '/' for p in missing)}"
        )
    return path


def read_level_scale(folder: str | Path) -> float:
    """``level_scale`` from a folder's ``model_index.json`` (absent in published folders: 1.0)."""
    index = Path(folder) / "model_index.json"
    if not index.exists():
        return 1.0
    return float(json.loads(index.read_text()).get("level_scale", 1.0))


def load_scheduler(folder: str | Path) -> Any:
    """The scheduler class and config stored in ``folder/scheduler``."""
    config_path = Path(folder) / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    cls = getattr(diffusers, config.get("_class_name", "DDPMScheduler"), None)
    if cls is None:
        raise ModelFolderError(f"{config_path} names unknown scheduler {config.get('_class_name')!r}")
    return cls.from_config(config)


def add_level_embedding(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """A copy of a UNet without class embedding, with Text2Earth's level embedding added.

    The new MLP's last layer is zero, so its output is exactly zero and predictions equal the
    source UNet's until training moves it.
    """
    if unet.config.class_embed_type is not None:
        raise ValueError(f"UNet already has a class embedding ({unet.config.class_embed_type!r})")
    config = dict(unet.config)
    config["class_embed_type"] = "timestep"
    new = UNet2DConditionModel.from_config(config)
    missing, unexpected = new.load_state_dict(unet.state_dict(), strict=False)
    if unexpected or any(not k.startswith("class_embedding.") for k in missing):
        raise RuntimeError(f"unexpected weight mismatch: missing={missing} unexpected={unexpected}")
    embedding: TimestepEmbedding = new.class_embedding
    torch.nn.init.zeros_(embedding.linear_2.weight)
    torch.nn.init.zeros_(embedding.linear_2.bias)
    return new.to(dtype=unet.dtype)


def build_from_preset(name: str, overrides: dict[str, Any] | None = None, seed: int = 0) -> Components:
    """Random-weight components of a preset (deterministic for ``seed``)."""
    preset = get_preset(name, overrides)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**preset["unet"])
        vae = AutoencoderKL(**preset["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**preset["text_encoder"]))
    return Components(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=load_clip_tokenizer(max_length=preset["text_encoder"]["max_position_embeddings"]),
        unet=unet,
        scheduler=DDPMScheduler.from_config(SCHEDULER),
        level_scale=float(preset["level_scale"]),
    )


def load_from_folder(
    folder: str | Path,
    torch_dtype: torch.dtype | None = None,
    inpainting: bool | None = None,
    variant: str | None = None,
) -> Components:
    """Components from a local folder in the published Text2Earth (diffusers) layout.

    ``inpainting`` True / False requires a 9- / 4-input-channel UNet (Text2Earth-inpainting / Text2Earth);
    None accepts either. ``variant`` (``fp16``, ``bf16``) reads the ``*.{variant}.safetensors`` weights.
    """
    path = check_model_folder(folder)
    with reading_weights(path):
        return _load_from_folder(path, torch_dtype, inpainting, variant)


def _load_from_folder(
    path: Path, torch_dtype: torch.dtype | None, inpainting: bool | None, variant: str | None
) -> Components:
    kwargs: dict[str, Any] = {"local_files_only": True}
    if torch_dtype is not None:
        kwargs["torch_dtype"] = torch_dtype
    if variant is not None:
        check_variant(path, variant)
        kwargs["variant"] = variant
    unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", **kwargs)
    if unet.config.class_embed_type != "timestep":
        raise ModelFolderError(
            f"{path}/unet has no zoom-level embedding (class_embed_type={unet.config.class_embed_type!r}); "
            "for a plain Stable Diffusion 2 folder use model.sd2_folder (from_sd2)"
        )
    if inpainting is not None and is_inpainting_unet(unet) != inpainting:
        kinds = {True: "an inpainting model (9 input channels)", False: "a text-to-image model (4 input channels)"}
        raise ModelFolderError(f"{path} holds {kinds[not inpainting]}, but this needs {kinds[inpainting]}")
    return Components(
        vae=AutoencoderKL.from_pretrained(path, subfolder="vae", **kwargs),
        text_encoder=CLIPTextModel.from_pretrained(path / "text_encoder", **kwargs),
        tokenizer=CLIPTokenizer.from_pretrained(path / "tokenizer"),
        unet=unet,
        scheduler=load_scheduler(path),
        level_scale=read_level_scale(path),
    )


def load_from_sd2(folder: str | Path, level_scale: float = 1.0, torch_dtype: torch.dtype | None = None) -> Components:
    """Components from a local SD2(-base) folder, with a zero-initialised level embedding added."""
    path = check_model_folder(folder)
    kwargs = {"local_files_only": True}
    if torch_dtype is not None:
        kwargs["torch_dtype"] = torch_dtype
    unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", **kwargs)
    return Components(
        vae=AutoencoderKL.from_pretrained(path, subfolder="vae", **kwargs),
        text_encoder=CLIPTextModel.from_pretrained(path / "text_encoder", **kwargs),
        tokenizer=CLIPTokenizer.from_pretrained(path / "tokenizer"),
        unet=add_level_embedding(unet),
        scheduler=load_scheduler(path),
        level_scale=level_scale,
    )


def build_components(
    preset: str | None = None,
    folder: str | None = None,
    sd2_folder: str | None = None,
    vae_folder: str | None = None,
    text_encoder_folder: str | None = None,
    overrides: dict[str, Any] | None = None,
    level_scale: float | None = None,
    prediction_type: str | None = None,
    inpainting: bool = False,
    seed: int = 0,
) -> Components:
    """The one entry point Hydra configs call: exactly one of ``preset``/``folder``/``sd2_folder``.

    ``vae_folder`` swaps in a separately trained autoencoder (the demo recipe trains one first);
    ``text_encoder_folder`` swaps in the text tower of an image-text ``CLIPModel`` folder (e.g. the shipped
    ``weights/rsclip_tiny``, trained with the sigmoid loss on the embedded captions) or a ``CLIPTextModel`` folder;
    ``prediction_type`` sets epsilon / v_prediction on the scheduler that training and export use;
    ``inpainting`` turns a text-to-image UNet into a 9-channel inpainting one (zero-initialised extra
    channels; a folder that already holds one is used as it is).
    """
    sources = [s for s in (preset, folder, sd2_folder) if s]
    if len(sources) != 1:
        raise ValueError("give exactly one of model preset, folder or sd2_folder")
    if preset:
        components = build_from_preset(preset, overrides, seed=seed)
    elif folder:
        components = load_from_folder(folder)
    else:
        components = load_from_sd2(sd2_folder, level_scale=level_scale or 1.0)
    if vae_folder:
        vae_path = Path(vae_folder)
        if not (vae_path / "config.json").exists() and (vae_path / "vae" / "config.json").exists():
            vae_path = vae_path / "vae"
        if not (vae_path / "config.json").exists():
            hint = " (`make demo-train` trains it there first)" if vae_path.parts[-2:] == ("demo_train", "vae") else ""
            raise ModelFolderError(
                f"no autoencoder (vae/config.json) in {vae_folder!r}{hint}; model.components.vae_folder names a "
                "trained autoencoder's folder, e.g. weights/demo/vae"
            )
        with reading_weights(vae_path):
            components.vae = AutoencoderKL.from_pretrained(vae_path, local_files_only=True)
    if text_encoder_folder:
        components.text_encoder = load_text_tower(text_encoder_folder, components.text_encoder.config)
    if inpainting and not is_inpainting_unet(components.unet):
        components.unet = inpainting_unet_from(components.unet)
    if level_scale is not None:
        components.level_scale = float(level_scale)
    if prediction_type is not None:
        components.scheduler = components.scheduler.__class__.from_config(
            components.scheduler.config, prediction_type=prediction_type
        )
    return components


def check_variant(folder: Path, variant: str) -> None:
    """A one-line error when ``folder`` has no ``*.{variant}.safetensors`` weights (before any loading)."""
    if not any(folder.glob(f"*/*.{variant}.safetensors")):
        found = sorted({p.name.split(".")[-2] for p in folder.glob("*/*.*.safetensors")})
        raise ModelFolderError(
            f"{folder} has no {variant!r} weights (*.{variant}.safetensors); variants there: {found or 'none'}"
        )


def load_text_tower(folder: str | Path, expected: CLIPTextConfig) -> CLIPTextModel:
    """The ``CLIPTextModel`` of a ``CLIPModel`` (or ``CLIPTextModel``) folder; its width must fit the UNet's."""
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise ModelFolderError(f"text_encoder_folder {str(folder)!r} has no config.json (a CLIPModel folder)")
    model_type = json.loads((path / "config.json").read_text()).get("model_type")
    if model_type not in ("clip", "clip_text_model"):
        raise ModelFolderError(f"text_encoder_folder {str(folder)!r} holds a {model_type!r} model, not a CLIP one")
    tower = CLIPTextModel.from_pretrained(path, local_files_only=True)
    if tower.config.hidden_size != expected.hidden_size:
        raise ModelFolderError(
            f"text_encoder_folder {str(folder)!r}: hidden size {tower.config.hidden_size}, the UNet's cross-attention "
            f"expects {expected.hidden_size}"
        )
    return tower


def save_folder(
    components: Components,
    folder: str | Path,
    class_name: str = "Text2EarthPipeline",
    dtype: torch.dtype | None = None,
    variant: str | None = None,
) -> Path:
    """Write ``components`` as a folder in the published diffusers layout (safetensors, ``model_index.json``).

    The same files ``DiffusionPipeline.save_pretrained`` writes, without needing a pipeline object, so the
    training layer can export; ``class_name`` is the pipeline ``model_index.json`` names. ``dtype`` casts
    the weights and ``variant`` names their files (``unet/diffusion_pytorch_model.fp16.safetensors``).
    Beside them goes ``pipeline.py``, a sampler that needs only diffusers (see
    ``text2earth/assets/diffusers_pipeline.py``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {
        "_class_name": class_name,
        "_diffusers_version": diffusers.__version__,
        "level_scale": float(components.level_scale),
    }
    for name in SUBFOLDERS:
        part = getattr(components, name)
        library = type(part).__module__.split(".")[0]
        index[name] = [library, type(part).__name__]
        if name in ("tokenizer", "scheduler"):
            part.save_pretrained(folder / name)
        else:
            if dtype is not None and part.dtype != dtype:
                part = copy.deepcopy(part).to(dtype)  # a cast copy: the caller's weights keep their precision
            part.save_pretrained(folder / name, safe_serialization=True, variant=variant)
    shutil.copyfile(STANDALONE_PIPELINE, folder / "pipeline.py")
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return folder


def count_parameters(preset: str) -> dict[str, int]:
    """Parameter counts of a preset, built on the meta device (no memory, instant)."""
    with torch.device("meta"):
        parts = get_preset(preset)
        unet = UNet2DConditionModel(**parts["unet"])
        vae = AutoencoderKL(**parts["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**parts["text_encoder"]))
    counts = {
        name: sum(p.numel() for p in m.parameters())
        for name, m in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder))
    }
    counts["total"] = sum(counts.values())
    return counts
