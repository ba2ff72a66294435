"""Training configuration: a YAML file read into dataclasses, every field checked.

Unknown keys, wrong types and impossible values raise ``ConfigError`` naming the field
(``training.phases[1].lr``), so a typo never silently falls back to a default. Relative paths
are taken relative to the working directory the command runs in.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import yaml

from ..errors import ConfigError

VARIANTS = ("plain", "pa")
SIZES = ("auto", "official", "tiny")
MIXED_PRECISION = ("no", "fp16", "bf16")
PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass
class Phase:
    """A stretch of training at one learning rate."""

    iterations: int
    lr: float


@dataclass
class SeeCoderSection:
    variant: str = "plain"  # plain | pa
    init: Optional[str] = None  # official-layout SeeCoder(-PA) file to start from
    backbone: Optional[str] = None  # Swin weights (official imencoder.* or timm swin layout)
    size: str = "auto"  # auto | official | tiny (only without init)
    unconditional: str = "zeros"  # zeros, or a file with a (tokens, C) embedding


@dataclass
class DataSection:
    paths: List[str] = field(default_factory=list)  # folders (recursive), .tar shards, globs
    resolution: int = 512
    buckets: Any = "auto"  # auto | square | [[W, H], ...]
    max_aspect: float = 2.0
    bucket_step: int = 64
    num_workers: int = 2
    cache_latents: bool = False
    cache_dir: Optional[str] = None  # default: <output_dir>/latent_cache


@dataclass
class TrainingSection:
    batch_size: int = 4  # per process (GPU)
    gradient_accumulation: int = 1
    phases: List[Phase] = field(default_factory=lambda: [Phase(50000, 1e-4), Phase(50000, 1e-5)])
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: Optional[float] = 1.0
    mixed_precision: str = "no"  # no | fp16 | bf16
    uncond_dropout: float = 0.1
    seed: int = 0
    # Sanity check of a setup: every micro-batch draws the same noise, timesteps and dropout,
    # so the loss is that of one fixed batch and must fall as the model fits it.
    fixed_noise: bool = False
    gradient_checkpointing: bool = False
    prediction_type: str = "epsilon"

    @property
    def total_steps(self) -> int:
        return sum(p.iterations for p in self.phases)


@dataclass
class SamplesSection:
    interval: int = 0  # steps between previews; 0: only at the end (when references are given)
    references: List[str] = field(default_factory=list)  # image files or folders
    steps: int = 20
    guidance: float = 2.0
    scheduler: str = "DDIM"
    seed: int = 20
    size: Optional[List[int]] = None  # [W, H]; default: the reference's bucket


@dataclass
class TrainConfig:
    base_model: str = "tiny"
    output_dir: str = "outputs/train"
    seecoder: SeeCoderSection = field(default_factory=SeeCoderSection)
    data: DataSection = field(default_factory=DataSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    samples: SamplesSection = field(default_factory=SamplesSection)
    checkpoint_interval: int = 5000
    keep_states: int = 2  # trainer-state folders kept (0: keep all)
    resume: Optional[str] = None  # null | latest | path to a state folder
    log_interval: int = 1
    progress: bool = True

    # ------------------------------------------------------------------ checks
    def validate(self) -> "TrainConfig":
        s, d, t, sm = self.seecoder, self.data, self.training, self.samples
        _choice("seecoder.variant", s.variant, VARIANTS)
        _choice("seecoder.size", s.size, SIZES)
        _choice("training.mixed_precision", t.mixed_precision, MIXED_PRECISION)
        _choice("training.prediction_type", t.prediction_type, PREDICTION_TYPES)
        if not self.base_model:
            raise ConfigError("base_model is empty: give 'tiny' or a diffusers model folder")
        if not d.paths:
            raise ConfigError("data.paths is empty: list image folders, .tar shards or glob patterns")
        _positive("data.bucket_step", d.bucket_step)
        _positive("data.resolution", d.resolution)
        if d.resolution % d.bucket_step:
            raise ConfigError(f"data.resolution {d.resolution} is not a multiple of data.bucket_step {d.bucket_step}")
        if d.bucket_step % 8:
            raise ConfigError(f"data.bucket_step must be a multiple of 8 (the VAE factor), got {d.bucket_step}")
        if d.max_aspect < 1:
            raise ConfigError(f"data.max_aspect must be >= 1, got {d.max_aspect}")
        if d.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {d.num_workers}")
        self._check_buckets()
        _positive("training.batch_size", t.batch_size)
        _positive("training.gradient_accumulation", t.gradient_accumulation)
        if not t.phases:
            raise ConfigError("training.phases is empty: give at least one {iterations, lr}")
        for i, p in enumerate(t.phases):
            _positive(f"training.phases[{i}].iterations", p.iterations)
            if not p.lr > 0:
                raise ConfigError(f"training.phases[{i}].lr must be > 0, got {p.lr}")
        if t.warmup_steps < 0:
            raise ConfigError(f"training.warmup_steps must be >= 0, got {t.warmup_steps}")
        if not 0.0 <= t.uncond_dropout <= 1.0:
            raise ConfigError(f"training.uncond_dropout is a probability in [0, 1], got {t.uncond_dropout}")
        if t.max_grad_norm is not None and t.max_grad_norm < 0:
            raise ConfigError(f"training.max_grad_norm must be >= 0 (or null), got {t.max_grad_norm}")
        _positive("checkpoint_interval", self.checkpoint_interval)
        _positive("log_interval", self.log_interval)
        if self.keep_states < 0:
            raise ConfigError(f"keep_states must be >= 0, got {self.keep_states}")
        if sm.interval < 0:
            raise ConfigError(f"samples.interval must be >= 0, got {sm.interval}")
        _positive("samples.steps", sm.steps)
        if sm.size is not None:
            if len(sm.size) != 2 or any(v <= 0 or v % 8 for v in sm.size):
                raise ConfigError(f"samples.size must be [W, H] with multiples of 8, got {sm.size}")
        from ..sampling import SCHEDULERS

        if sm.scheduler not in SCHEDULERS:
            raise ConfigError(f"samples.scheduler '{sm.scheduler}' is unknown; choose one of: {', '.join(SCHEDULERS)}")
        return self

    def _check_buckets(self) -> None:
        d = self.data
        if isinstance(d.buckets, str):
            _choice("data.buckets", d.buckets, ("auto", "square"))
            return
        if not isinstance(d.buckets, list) or not d.buckets:
            raise ConfigError("data.buckets must be 'auto', 'square' or a list of [W, H] pairs")
        for i, b in enumerate(d.buckets):
            if not (isinstance(b, (list, tuple)) and len(b) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in b)):
                raise ConfigError(f"data.buckets[{i}] must be a [W, H] pair of integers, got {b!r}")
            if any(v <= 0 or v % d.bucket_step for v in b):
                raise ConfigError(f"data.buckets[{i}] {b} must be positive multiples of {d.bucket_step}")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _choice(name: str, value, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _positive(name: str, value) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")


# ---------------------------------------------------------------------- dict -> dataclasses
def _convert(value, tp, name: str):
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Union:  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], name)
    if value is None:
        raise ConfigError(f"{name} must not be null")
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, name)
    if origin in (list, List):
        (item,) = typing.get_args(tp)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            # A single path is accepted where a list of paths is expected.
            if item is str and isinstance(value, str):
                return [value]
            raise ConfigError(f"{name} must be a list, got {value!r}")
        return [_convert(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{name} must be a number, got {value!r}") from None
        if not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported config type {tp} for {name}")  # pragma: no cover


def _from_dict(cls, data, name: str = ""):
    if not isinstance(data, Mapping):
        raise ConfigError(f"{name or 'the config'} must be a mapping of fields, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        where = f" in {name}" if name else ""
        raise ConfigError(f"unknown field(s){where}: {', '.join(map(str, unknown))}; known: {', '.join(sorted(known))}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _convert(value, hints[key], f"{name}.{key}" if name else key)
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field (e.g. Phase.lr) is missing
        raise ConfigError(f"{name or 'the config'}: {e}") from None


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    return _from_dict(TrainConfig, data or {}).validate()


def apply_override(data: Dict[str, Any], assignment: str) -> None:
    """``a.b.c=value`` (value parsed as YAML) into the nested dict ``data``."""
    if "=" not in assignment:
        raise ConfigError(f"override '{assignment}' must look like section.field=value")
    key, raw = assignment.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override '{assignment}' has no field name")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{assignment}': '{p}' is not a section")
    node[parts[-1]] = yaml.safe_load(raw)


# The project's configs/ (a link in a checkout, a copy in an installed package).
BUNDLED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def load_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML training config and apply ``section.field=value`` overrides."""
    data: Dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file() and (BUNDLED_CONFIGS / p.name).is_file() and p.parent in (Path("."), Path("configs")):
            p = BUNDLED_CONFIGS / p.name  # an installed package: the project's configs by name
        if not p.is_file():
            raise ConfigError(f"training config '{p}' does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"training config '{p}' is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"training config '{p}' must hold a mapping of sections")
    for o in overrides:
        apply_override(data, o)
    return config_from_dict(data)


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
