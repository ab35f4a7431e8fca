"""Configuration: `MagiConfig` (the model) with named presets, and typed YAML loading.

Configs are plain dataclasses. `from_dict` rejects unknown keys and wrong types with the key's name, so
a typo in a YAML file fails before anything is built. Dotted overrides (`model.width=256`) are applied
to the nested dict before it is turned into dataclasses. Other config dataclasses (training, data) use
the same `from_dict` / `load_yaml` machinery.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import yaml

# --------------------------------------------------------------------------------------------------
# Typed dict -> dataclass conversion shared by every config


def _check_value(value: Any, tp: Any, name: str) -> Any:
    """Return `value` converted to type `tp`, or raise a ValueError naming `name`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{name}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for option in args:
            try:
                return _check_value(value, option, name)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(f"{name}: {value!r} matches none of {tp}: {'; '.join(errors)}")
    if tp is type(None):
        if value is not None:
            raise ValueError(f"{name}: expected null, got {value!r}")
        return None
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{name}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=f"{name}.")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ValueError(f"{name}: expected {len(args)} items, got {len(value)}")
            items = [_check_value(v, a, f"{name}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [_check_value(v, item_tp, f"{name}[{i}]") for i, v in enumerate(value)]
        return origin(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{name}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{name}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ValueError(f"{name}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from `data`, rejecting unknown keys and wrong types by name."""
    if not isinstance(data, dict):
        raise ValueError(f"{prefix or cls.__name__}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)} for {cls.__name__}; "
            f"known keys: {', '.join(sorted(known))}"
        )
    kwargs = {k: _check_value(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> dict:
    """A dataclass as a plain dict of YAML/JSON-serializable values (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(obj))


def parse_override(text: str) -> tuple[list[str], Any]:
    """`"a.b=3"` -> (["a", "b"], 3); the value is parsed as YAML so numbers, bools and lists work."""
    if "=" not in text:
        raise ValueError(f"override {text!r}: expected key=value, e.g. train.lr=1e-4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"override {text!r}: empty key")
    return key.split("."), yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a nested dict (a copy); intermediate mappings are created as needed."""
    import copy

    data = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {text!r}: {part!r} is not a mapping")
            node = child
        node[path[-1]] = value
    return data


def load_yaml(path: str | Path, overrides: list[str] | None = None) -> dict:
    """Read a YAML mapping and apply dotted overrides; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return apply_overrides(data, overrides or [])


# --------------------------------------------------------------------------------------------------
# The model config


@dataclass
class MagiConfig:
    """Everything that defines a MAGI model; saved with every checkpoint and rebuilds it on load."""

    # latent input: (B, T, C, h, w)
    latent_channels: int = 4
    latent_size: Union[int, tuple[int, int]] = 8
    num_frames: int = 4  # latent frames per training clip (T_train; temporal table size)
    patch_size: int = 2
    # backbone
    width: int = 256
    depth: int = 4  # spatial-temporal blocks; each = one spatial + one temporal layer
    num_heads: int = 4
    mlp_ratio: float = 4.0
    # diffusion head (MAR)
    head_width: int = 256
    head_depth: int = 3
    diffusion_train_steps: int = 1000
    noise_schedule: Literal["cosine", "linear"] = "cosine"
    diffusion_batch_mul: int = 4
    # conditioning
    num_classes: int = 0  # 0 = unconditional; the null class is row `num_classes`
    class_dropout: float = 0.1
    max_interval: int = 25  # intervals 1..max_interval are drawn in dynamic-interval training
    default_interval: int = 1  # the interval conditioned on when none is given
    # masking (MAR): ratio ~ truncnorm on [mask_ratio_min, 1] centred at 1 with this std
    mask_ratio_min: float = 0.7
    mask_ratio_std: float = 0.25
    # method and kernel
    teacher_forcing: Literal["ctf", "mtf"] = "ctf"
    attention: Literal["flex", "sdpa"] = "flex"
    compile_flex: bool = True  # torch.compile the FlexAttention kernel where the platform allows

    def __post_init__(self) -> None:
        if isinstance(self.latent_size, list):
            self.latent_size = tuple(self.latent_size)
        self.validate()

    # ---- derived quantities
    @property
    def grid(self) -> tuple[int, int]:
        """Latent grid (h, w)."""
        s = self.latent_size
        return (s, s) if isinstance(s, int) else (int(s[0]), int(s[1]))

    @property
    def tokens_per_frame(self) -> int:
        h, w = self.grid
        return (h // self.patch_size) * (w // self.patch_size)

    @property
    def token_dim(self) -> int:
        return self.latent_channels * self.patch_size**2

    @property
    def mlp_dim(self) -> int:
        return int(round(self.width * self.mlp_ratio))

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot describe a working model."""
        positive = ["latent_channels", "num_frames", "patch_size", "width", "depth", "num_heads",
                    "head_width", "head_depth", "diffusion_train_steps", "diffusion_batch_mul",
                    "max_interval", "default_interval"]
        for name in positive:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"MagiConfig.{name}: expected a positive integer, got {v!r}")
        h, w = self.grid
        if h <= 0 or w <= 0:
            raise ValueError(f"MagiConfig.latent_size: expected positive sizes, got {self.latent_size!r}")
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"MagiConfig.patch_size: {self.patch_size} does not divide the latent grid {h}x{w}")
        if self.width % self.num_heads:
            raise ValueError(
                f"MagiConfig.num_heads: {self.num_heads} does not divide width {self.width}")
        if (self.width // self.num_heads) % 2:
            raise ValueError(f"MagiConfig.num_heads: head dim {self.width // self.num_heads} must be even")
        if self.mlp_ratio <= 0:
            raise ValueError(f"MagiConfig.mlp_ratio: expected > 0, got {self.mlp_ratio}")
        if self.num_classes < 0:
            raise ValueError(f"MagiConfig.num_classes: expected >= 0, got {self.num_classes}")
        if not 0.0 <= self.class_dropout < 1.0:
            raise ValueError(f"MagiConfig.class_dropout: expected in [0, 1), got {self.class_dropout}")
        if not 0.0 < self.mask_ratio_min <= 1.0:
            raise ValueError(f"MagiConfig.mask_ratio_min: expected in (0, 1], got {self.mask_ratio_min}")
        if self.mask_ratio_std <= 0:
            raise ValueError(f"MagiConfig.mask_ratio_std: expected > 0, got {self.mask_ratio_std}")
        if self.teacher_forcing not in ("ctf", "mtf"):
            raise ValueError(
                f"MagiConfig.teacher_forcing: expected 'ctf' or 'mtf', got {self.teacher_forcing!r}")
        if self.attention not in ("flex", "sdpa"):
            raise ValueError(f"MagiConfig.attention: expected 'flex' or 'sdpa', got {self.attention!r}")
        if self.noise_schedule not in ("cosine", "linear"):
            raise ValueError(
                f"MagiConfig.noise_schedule: expected 'cosine' or 'linear', got {self.noise_schedule!r}")

    # ---- construction
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "MagiConfig":
        """A named configuration (`magi-850m`, `magi-b`, `tiny`, `test`) with fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"MagiConfig.preset: unknown preset {name!r}; known: {', '.join(PRESETS)}")
        data = dict(PRESETS[name])
        data.update(overrides)
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict) -> "MagiConfig":
        """Build from a mapping; a `preset` key starts from that preset. Unknown keys are rejected."""
        data = dict(data)
        preset = data.pop("preset", None)
        if preset is not None:
            return cls.preset(preset, **data)
        return from_dict(cls, data, prefix="model.")

    def to_dict(self) -> dict:
        return to_dict(self)

    def replace(self, **changes: Any) -> "MagiConfig":
        return dataclasses.replace(self, **changes)

    def diff(self, other: "MagiConfig", runtime: bool = False) -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ: {name: (self's, other's)}. The kernel choices
        (`RUNTIME_FIELDS`) do not change the weights and are left out unless `runtime`."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b.get(k)) for k in a
                if a[k] != b.get(k) and (runtime or k not in RUNTIME_FIELDS)}


# Fields that choose how the model computes, not what it computes: free to differ from a checkpoint's.
RUNTIME_FIELDS = ("attention", "compile_flex")

PRESETS: dict[str, dict[str, Any]] = {
    # DESIGN §1 exactly: 20 blocks of width 1280 / MLP 5120 / 16 heads, MAR head 3 x 1024, patch 2.
    # Latents: Cosmos 4x8x8 video tokenizer (16 channels) at 128 px, 17 frames -> 5 latent frames.
    "magi-850m": dict(latent_channels=16, latent_size=16, num_frames=5, patch_size=2,
                      width=1280, depth=20, num_heads=16, mlp_ratio=4.0,
                      head_width=1024, head_depth=3, num_classes=101),
    # A single-GPU research size (~190M): 12 blocks of width 768.
    "magi-b": dict(latent_channels=16, latent_size=16, num_frames=5, patch_size=2,
                   width=768, depth=12, num_heads=12, mlp_ratio=4.0,
                   head_width=1024, head_depth=3, num_classes=101),
    # CPU demo size (~2M): 32x32 moving digits through the pixels VAE (space-to-depth 4 -> 16ch 8x8).
    # Decision: the linear noise schedule for the small CPU presets. With MAR's cosine schedule the
    # first respaced sampling step multiplies the head's eps error at t=999 by ~170 (alpha_bar there
    # is ~1e-8), which a briefly trained small head cannot survive (tests/test_diffusion.py measures
    # it); the paper presets keep cosine. SDPA: torch has no FlexAttention backward on the CPU.
    "tiny": dict(latent_channels=16, latent_size=8, num_frames=6, patch_size=2,
                 width=128, depth=4, num_heads=4, mlp_ratio=4.0,
                 head_width=128, head_depth=3, num_classes=10,
                 noise_schedule="linear", attention="sdpa"),
    # Smallest model that still runs every code path (classes, head depth > 1, several frames).
    "test": dict(latent_channels=4, latent_size=4, num_frames=3, patch_size=2,
                 width=32, depth=1, num_heads=2, mlp_ratio=2.0,
                 head_width=32, head_depth=2, num_classes=3, diffusion_batch_mul=2,
                 noise_schedule="linear", compile_flex=False),
}


__all__ = ["MagiConfig", "PRESETS", "from_dict", "to_dict", "load_yaml", "apply_overrides",
           "parse_override"]
