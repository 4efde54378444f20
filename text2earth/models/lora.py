"""LoRA adapters on the UNet (peft, through diffusers' adapter support): add, save, load, switch, scale.

One adapter per modality (text-to-NIR, text-to-PAN, text-to-SAR), each a folder with diffusers'
``pytorch_lora_weights.safetensors`` (its LoRA config in the safetensors metadata) and ``lora.json``
(modality, base model, training figures). A model folder keeps its adapters under ``lora/{modality}/``,
so ``text2earth generate --modality nir`` finds them; several can be loaded into one UNet and switched.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffusers import UNet2DConditionModel

from text2earth.io.files import atomic_directory, write_atomic

# Attention projections of every transformer block: the usual LoRA targets for Stable Diffusion UNets.
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def add_lora(
    unet: UNet2DConditionModel,
    rank: int = 4,
    alpha: float | None = None,
    target_modules: Sequence[str] = DEFAULT_TARGETS,
    adapter_name: str = "default",
) -> UNet2DConditionModel:
    """Freeze the UNet and add a trainable LoRA adapter (``lora_B`` zero: the UNet's output is unchanged)."""
    from peft import LoraConfig  # imported here: only LoRA runs pay for importing peft

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    unet.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=list(target_modules), init_lora_weights=True)
    unet.add_adapter(config, adapter_name=adapter_name)
    return unet


def save_lora(
    unet: UNet2DConditionModel, folder: str | Path, adapter_name: str = "default", info: dict[str, Any] | None = None
) -> Path:
    """Write the adapter's weights (safetensors) and ``lora.json`` into ``folder``, atomically."""
    with atomic_directory(folder) as tmp:
        unet.save_lora_adapter(tmp, adapter_name=adapter_name, upcast_before_saving=True, weight_name=WEIGHT_NAME)
        write_atomic(tmp / "lora.json", json.dumps(info or {}, indent=2).encode())
    return Path(folder)


def lora_folder(path: str | Path) -> Path:
    """An adapter folder (or its safetensors file) checked; a one-line ``FileNotFoundError`` otherwise."""
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        path = path.parent
    if not (path / WEIGHT_NAME).is_file():
        raise FileNotFoundError(f"no LoRA adapter ({WEIGHT_NAME}) in {str(path)!r}")
    return path


def modality_lora(model_folder: str | Path, modality: str) -> Path:
    """The adapter a model folder keeps for ``modality`` (``MODEL/lora/{modality}``)."""
    path = Path(model_folder) / "lora" / modality
    if not (path / WEIGHT_NAME).is_file():
        known = sorted(p.name for p in (Path(model_folder) / "lora").glob("*") if (p / WEIGHT_NAME).is_file())
        raise FileNotFoundError(
            f"model {str(model_folder)!r} has no LoRA for modality {modality!r} (it has: {', '.join(known) or 'none'}); "
            "train one with `text2earth train experiment=cross_modal_" + modality + "` or pass --lora PATH"
        )
    return path


def load_lora(unet: UNet2DConditionModel, path: str | Path, adapter_name: str, scale: float = 1.0) -> str:
    """Load an adapter folder under ``adapter_name`` and make it the active one at ``scale``."""
    folder = lora_folder(path)
    unet.load_lora_adapter(str(folder / WEIGHT_NAME), prefix=None, adapter_name=adapter_name)
    use_lora(unet, adapter_name, scale)
    return adapter_name


def use_lora(unet: UNet2DConditionModel, adapter_name: str | None, scale: float = 1.0) -> None:
    """Switch to one loaded adapter at ``scale``, or (``None``) back to the base UNet."""
    if adapter_name is None:
        unet.disable_adapters()
        return
    loaded = getattr(unet, "peft_config", {})
    if adapter_name not in loaded:
        raise ValueError(f"no LoRA adapter named {adapter_name!r} is loaded (loaded: {', '.join(loaded) or 'none'})")
    unet.enable_adapters()
    unet.set_adapters([adapter_name], weights=[float(scale)])


def attach_lora(
    unet: UNet2DConditionModel,
    model_folder: str | Path,
    modality: str = "rgb",
    path: str | Path | None = None,
    scale: float = 1.0,
) -> str:
    """Load the LoRA a generation asks for (``path``, or the model's adapter for ``modality``); returns the
    modality of what will be generated (an adapter's own ``lora.json`` says it when only ``path`` is given)."""
    from text2earth.io.bands import check_modality

    check_modality(modality)
    if path is None and modality == "rgb":
        return modality  # the base model itself
    folder = lora_folder(path) if path is not None else modality_lora(model_folder, modality)
    info_file = folder / "lora.json"
    trained_for = json.loads(info_file.read_text()).get("modality", "rgb") if info_file.is_file() else "rgb"
    if path is not None and modality not in ("rgb", trained_for):
        raise ValueError(f"LoRA {str(folder)!r} was trained for modality {trained_for!r}, not {modality!r}")
    load_lora(unet, folder, adapter_name=trained_for, scale=scale)
    return trained_for
