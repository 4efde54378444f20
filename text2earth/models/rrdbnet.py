"""ESRGAN's RRDBNet with BasicSR's parameter names, so published BasicSR / Real-ESRGAN checkpoints load strictly.

The module tree (``conv_first``, ``body.N.rdbK.convM``, ``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``,
``conv_last``) and the forward pass follow ``basicsr.archs.rrdbnet_arch.RRDBNet`` exactly: any renaming here
would break ``load_state_dict(strict=True)`` on checkpoints people already have.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from text2earth.io.files import atomic_path

# The in-channel count of ``conv_first`` is how a checkpoint reveals its scale: scale 2 and 1 fold the input
# into channels with pixel-unshuffle (x4 and x16 channels) before the x4 trunk.
_UNSHUFFLE = {4: 1, 2: 2, 1: 4}


@dataclass(frozen=True)
class RRDBConfig:
    """Architecture of an RRDBNet; the defaults are the published Text2Earth enhancer (RRDBNet x2, 23 blocks)."""

    num_in_ch: int = 3
    num_out_ch: int = 3
    scale: int = 2
    num_feat: int = 64
    num_block: int = 23
    num_grow_ch: int = 32


def _init_scaled(convs: list[nn.Conv2d], scale: float) -> None:
    # BasicSR's default_init_weights: Kaiming-normal scaled down so the 0.2-scaled residuals start near identity.
    for conv in convs:
        nn.init.kaiming_normal_(conv.weight)
        conv.weight.data.mul_(scale)
        nn.init.zeros_(conv.bias)


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convolutions with a 0.2-scaled residual."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        _init_scaled([self.conv1, self.conv2, self.conv3, self.conv4, self.conv5], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks and an outer 0.2-scaled residual."""

    def __init__(self, num_feat: int, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """RRDBNet for scale 4 (plain), 2 and 1 (pixel-unshuffle first, then the same two 2x nearest upsamples).

    Input and output are float images in [0, 1], shape (B, C, H, W). For scale 2 (1), H and W must be
    multiples of 2 (4); :func:`text2earth.enhance.tiling.upscale` pads odd sizes for you.
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        scale: int = 2,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
    ) -> None:
        super().__init__()
        if scale not in _UNSHUFFLE:
            raise ValueError(f"RRDBNet scale must be 1, 2 or 4, got {scale}")
        self.config = RRDBConfig(num_in_ch, num_out_ch, scale, num_feat, num_block, num_grow_ch)
        self.scale = scale
        self.unshuffle = _UNSHUFFLE[scale]
        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    @classmethod
    def from_config(cls, config: RRDBConfig) -> RRDBNet:
        return cls(**asdict(config))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch's pixel_unshuffle orders channels (c, dy, dx) exactly like BasicSR's view/permute version.
        feat = F.pixel_unshuffle(x, self.unshuffle) if self.unshuffle > 1 else x
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


def unwrap_state_dict(obj: object) -> dict[str, torch.Tensor]:
    """Return the network weights from a BasicSR checkpoint: ``params_ema`` first, then ``params``, else bare.

    ``params_ema`` wins because BasicSR stores the EMA weights (the ones it evaluates with) under that key.
    A leading ``module.`` (saved from DataParallel/DDP) is stripped.
    """
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint holds a {type(obj).__name__}, expected a dict of tensors")
    for key in ("params_ema", "params"):
        if key in obj:
            obj = obj[key]
            break
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"checkpoint entry {bad[0]!r} is not a tensor; is this an RRDBNet checkpoint?")
    return state


def infer_config(state: dict[str, torch.Tensor]) -> RRDBConfig:
    """Read the architecture back from tensor shapes, so a checkpoint needs no side file to be loaded."""
    try:
        first = state["conv_first.weight"]
        num_feat, in_folded = int(first.shape[0]), int(first.shape[1])
        num_out_ch = int(state["conv_last.weight"].shape[0])
        num_grow_ch = int(state["body.0.rdb1.conv1.weight"].shape[0])
    except KeyError as err:
        raise ValueError(f"not an RRDBNet state dict (missing {err.args[0]!r})") from None
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("body.")}
    num_block = max(blocks) + 1
    # Output channels usually equal input channels; use that to tell the unshuffle factor apart.
    for scale, factor in _UNSHUFFLE.items():
        if in_folded == num_out_ch * factor**2:
            return RRDBConfig(num_out_ch, num_out_ch, scale, num_feat, num_block, num_grow_ch)
    raise ValueError(f"cannot infer the scale: conv_first takes {in_folded} channels for {num_out_ch} output channels")


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read weights from ``.safetensors`` (ours) or a torch pickle (BasicSR ``.pth``), never executing code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
            return load_file(str(path)), metadata
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"checkpoint {path} cannot be read (a damaged .safetensors file: {exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unpickling errors come in many types (and long texts about torch versions): one message
        raise ValueError(
            f"checkpoint {path} cannot be read: not a PyTorch (.pth) file, or damaged; RRDBNet weights are "
            "BasicSR .pth or .safetensors"
        ) from None
    return unwrap_state_dict(obj), {}


def load_rrdbnet(path: str | Path, config: RRDBConfig | None = None) -> RRDBNet:
    """Build an RRDBNet from a checkpoint and load it with ``strict=True``.

    ``config`` defaults to the one stored in our safetensors metadata, else the one inferred from shapes.
    """
    state, metadata = read_state_dict(path)
    if config is None:
        config = RRDBConfig(**json.loads(metadata["rrdbnet_config"])) if "rrdbnet_config" in metadata else None
        config = config or infer_config(state)
    net = RRDBNet.from_config(config)
    net.load_state_dict(state, strict=True)
    return net.eval()


def save_rrdbnet(net: RRDBNet, path: str | Path) -> Path:
    """Write the weights as safetensors (BasicSR key names, bare state dict) with the config as metadata.

    Written to a temporary name and renamed so that an interrupted save never leaves a truncated file.
    """
    path = Path(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    with atomic_path(path) as tmp:  # a failed write (a full disk) leaves no torn .tmp behind
        save_file(state, str(tmp), metadata={"rrdbnet_config": json.dumps(asdict(net.config)), "format": "pt"})
    return path
