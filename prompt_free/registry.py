"""Named model sources from ``checkpoints.yaml``: validation and resolution to local files.

The registry knows *where* a model is; the engine knows how to load it. Downloads go through
huggingface_hub; offline, or when a file is missing, a ``ModelUnavailableError`` says which
entry, which file, and how to provide it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import yaml

from .errors import ChecksumError, ConfigError, ModelUnavailableError, UnknownModelError
from .lora_entries import LORA_SAMPLER_OPTIONS, NOT_VALIDATED, NOT_VALIDATED_WHY, check_lora_sampler, check_lora_sources
from .settings import hub_offline

# prompt_free/checkpoints.yaml links to the project's checkpoints.yaml in a checkout (resolved, so that
# relative `path:` entries stay relative to the project) and is a copy of it in an installed wheel.
DEFAULT_CHECKPOINTS = (Path(__file__).resolve().parent / "checkpoints.yaml").resolve()
KINDS = ("seecoders", "base_models", "controlnets", "ip_adapters", "loras", "previews")
KIND_LABEL = {
    "seecoders": "SeeCoder",
    "base_models": "base model",
    "controlnets": "ControlNet",
    "ip_adapters": "IP-Adapter",
    "loras": "LoRA",
    "previews": "preview decoder",
}
SOURCE_KEYS = {"path", "repo", "file", "subfolder", "revision", "repo_type", "sha256"}
ENTRY_OPTIONS = {
    "seecoders": {"unconditional", "seed", "base_model"},
    "base_models": {"format", "vae", "inpainting", "seed", "unet_config", "vae_config"},
    "controlnets": {"preprocessor", "kind", "seed", "config"},
    "ip_adapters": {"image_encoder", "seed"},
    "loras": {"scheduler", "steps", "guidance", "validated"},
    "previews": {"seed"},
}
# The kinds of map a ControlNet takes (``kind:`` of a controlnets entry).
CONTROL_KINDS = ("openpose", "canny", "depth", "softedge", "mlsd", "normal", "scribble", "lineart",
                 "lineart_anime", "seg", "shuffle")
TINY_BUILDERS = {
    "seecoders": {"seecoder", "seecoder_pa"},
    "base_models": {"sd"},
    "controlnets": {"controlnet"},
    "ip_adapters": set(),
    "loras": set(),
    "previews": {"taesd"},
}

# Built-in full-size builders with random weights (``random:`` in checkpoints.yaml; the
# ``full-random`` profile, prompt_free/full_random.py). Like tiny ones they need no file.
RANDOM_BUILDERS = {
    "seecoders": {"seecoder_full", "seecoder_pa_full"},
    "base_models": {"sd15"},
    "controlnets": {"controlnet_sd15"},
    "ip_adapters": set(),
    "loras": set(),
    "previews": {"taesd_full"},
}
BASE_MODEL_FORMATS = {"diffusers", "single_file", "pfd_unet"}
MODEL_INDEX = "model_index.json"  # the file that marks a diffusers model repo (root or subfolder)


@dataclass(frozen=True)
class Source:
    """One place a file or a diffusers model can come from."""

    path: Optional[Path] = None
    repo: Optional[str] = None
    file: Optional[str] = None
    subfolder: Optional[str] = None
    revision: Optional[str] = None
    repo_type: str = "model"
    sha256: Optional[str] = None

    def describe(self) -> str:
        if self.path is not None:
            return str(self.path)
        parts = [self.repo]
        if self.subfolder:
            parts.append(self.subfolder)
        if self.file:
            parts.append(self.file)
        where = "/".join(parts)
        return f"{where} (hub {self.repo_type})" if self.repo_type != "model" else f"{where} (hub)"

    @property
    def is_single_file(self) -> bool:
        """One weight file (a hub ``file`` or an existing local file), not a diffusers folder."""
        return bool(self.file) or (self.path is not None and self.path.is_file())


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    sources: Tuple[Source, ...] = ()
    tiny: Optional[str] = None  # a built-in builder (tiny, or full-size random: ``random:``)
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def full_random(self) -> bool:
        return self.tiny in RANDOM_BUILDERS[self.kind]

    @property
    def label(self) -> str:
        return f"{KIND_LABEL[self.kind]} '{self.name}'"

    def option(self, key: str, default=None):
        return self.options.get(key, default)

    @property
    def sampler_preset(self) -> Dict[str, Any]:
        """A LoRA's own sampler settings, those its entry gives (``scheduler``, ``steps``,
        ``guidance``, as ``Sampler`` fields); {} for other entries."""
        return {k: self.options[k] for k in LORA_SAMPLER_OPTIONS if k in self.options}

    @property
    def validated(self) -> bool:
        """False for a LoRA marked ``validated: false`` (also the default of an entry that
        carries sampler settings: few-step LoRAs were distilled with text context)."""
        return bool(self.options.get("validated", True))

    def lora_note(self) -> str:
        """What the app and the CLI say about a LoRA entry: the sampler it sets and whether it is
        validated with SeeCoder context ("" for a plain, validated LoRA)."""
        parts = []
        preset = self.sampler_preset
        if preset:
            parts.append(f"sets the sampler to {describe_sampler(preset)}")
        if not self.validated:
            parts.append(f"{NOT_VALIDATED} ({NOT_VALIDATED_WHY})")
        return f"{self.label} {'; '.join(parts)}" if parts else ""

    @property
    def format(self) -> str:
        """A base model's layout: its ``format:``, else single_file or diffusers by its first
        source (``tiny`` for a tiny entry)."""
        if self.tiny is not None:
            return "tiny"
        return self.option("format") or ("single_file" if self.sources[0].is_single_file else "diffusers")


def describe_sampler(preset: Mapping[str, Any]) -> str:
    """``{"scheduler": "LCM", "steps": 4, "guidance": 1.0}`` -> "LCM, 4 steps, guidance 1"."""
    parts = []
    if "scheduler" in preset:
        parts.append(str(preset["scheduler"]))
    if "steps" in preset:
        parts.append(f"{preset['steps']} steps")
    if "guidance" in preset:
        parts.append(f"guidance {float(preset['guidance']):g}")
    return ", ".join(parts)


def _parse_source(spec: Any, where: str, base_dir: Path) -> Tuple[Source, ...]:
    if isinstance(spec, str):
        spec = {"path": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: a source must be a mapping with 'path' or 'repo', got {spec!r}")
    if "sources" in spec:
        items = spec["sources"]
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{where}: 'sources' must be a non-empty list")
        sha = spec.get("sha256")
        out = []
        for i, item in enumerate(items):
            for s in _parse_source(item, f"{where} sources[{i}]", base_dir):
                out.append(Source(**{**s.__dict__, "sha256": s.sha256 or sha}))
        return tuple(out)
    unknown = set(spec) - SOURCE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown source field(s) {sorted(unknown)}; allowed: {sorted(SOURCE_KEYS)}")
    has_path, has_repo = "path" in spec, "repo" in spec
    if has_path == has_repo:
        raise ConfigError(f"{where}: give exactly one of 'path' or 'repo'")
    for key in SOURCE_KEYS - {"path"}:
        if key in spec and not isinstance(spec[key], str):
            raise ConfigError(f"{where}: '{key}' must be a string, got {spec[key]!r}")
    if has_path:
        p = Path(os.path.expanduser(str(spec["path"])))
        return (Source(path=p if p.is_absolute() else base_dir / p, sha256=spec.get("sha256")),)
    repo = spec["repo"]
    if repo.count("/") != 1:
        raise ConfigError(f"{where}: repo must look like 'owner/name', got '{repo}'")
    repo_type = spec.get("repo_type", "model")
    if repo_type not in {"model", "space", "dataset"}:
        raise ConfigError(f"{where}: repo_type must be model, space or dataset")
    return (
        Source(
            repo=repo, file=spec.get("file"), subfolder=spec.get("subfolder"),
            revision=spec.get("revision"), repo_type=repo_type, sha256=spec.get("sha256"),
        ),
    )


def _parse_model_config(value: Any, where: str, base_dir: Path) -> Dict[str, Any]:
    """A diffusers config for a single-file model of non-SD1.5 size: a mapping or a config.json."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        import json

        path = Path(os.path.expanduser(value))
        path = path if path.is_absolute() else base_dir / path
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{where}: config file '{path}' does not exist") from None
        except (OSError, ValueError) as e:
            raise ConfigError(f"{where}: config file '{path}' is not valid JSON ({e})") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: config file '{path}' must hold a JSON object")
        return dict(data)
    raise ConfigError(f"{where}: expected a mapping or the path of a config.json, got {value!r}")


def _parse_entry(kind: str, name: str, spec: Any, base_dir: Path) -> Entry:
    where = f"checkpoints.yaml: {KIND_LABEL[kind]} '{name}'"
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {spec!r}")
    spec = dict(spec)
    options = {k: spec.pop(k) for k in list(spec) if k in ENTRY_OPTIONS[kind]}
    tiny = spec.pop("tiny", None)
    full = spec.pop("random", None)
    if tiny is not None and full is not None:
        raise ConfigError(f"{where}: give 'tiny' or 'random', not both")
    if tiny is not None and tiny not in TINY_BUILDERS[kind]:
        raise ConfigError(f"{where}: unknown tiny builder '{tiny}' (choose {sorted(TINY_BUILDERS[kind])})")
    if full is not None:
        if full not in RANDOM_BUILDERS[kind]:
            raise ConfigError(f"{where}: unknown random builder '{full}' (choose {sorted(RANDOM_BUILDERS[kind])})")
        tiny = full
    if tiny is not None:
        if spec:
            raise ConfigError(f"{where}: unknown field(s) {sorted(spec)}")
        sources: Tuple[Source, ...] = ()
    else:
        if not spec:
            raise ConfigError(f"{where}: give a source ('path', 'repo' or 'sources')")
        sources = _parse_source(spec, where, base_dir)
    if "seed" in options and not isinstance(options["seed"], int):
        raise ConfigError(f"{where}: seed must be an integer")
    if "kind" in options and options["kind"] not in CONTROL_KINDS:
        raise ConfigError(f"{where}: kind must be one of {', '.join(CONTROL_KINDS)}, got {options['kind']!r}")
    fmt = options.get("format")
    if fmt is not None and fmt not in BASE_MODEL_FORMATS:
        raise ConfigError(f"{where}: format must be one of {sorted(BASE_MODEL_FORMATS)}, got '{fmt}'")
    if fmt == "pfd_unet" and "vae" not in options:
        raise ConfigError(f"{where}: an official UNet-only file (format: pfd_unet) needs a 'vae' source")
    for key in ("config", "unet_config", "vae_config"):
        if key in options:
            options[key] = _parse_model_config(options[key], f"{where} {key}", base_dir)
    for key in ("vae", "image_encoder"):
        if key in options:
            options[key] = _parse_source(options[key], f"{where} {key}", base_dir)
    if kind == "loras":
        check_lora_sources(name, sources, where)
        check_lora_sampler(options, where)
    unc = options.get("unconditional")
    if kind == "seecoders":
        if unc is None or unc == "zeros":
            options["unconditional"] = "zeros"
        elif isinstance(unc, Mapping) and unc.get("tiny") == "anime_unconditional":
            options["unconditional"] = "tiny"
        else:
            options["unconditional"] = _parse_source(unc, f"{where} unconditional", base_dir)
    return Entry(kind, name, sources, tiny, options)


class Registry:
    """The entries of one profile of a ``checkpoints.yaml``."""

    def __init__(self, profile: str, entries: Dict[str, Dict[str, Entry]], defaults: Dict[str, str], path: Optional[Path] = None, annotators: Tuple[Source, ...] = ()):
        self.profile = profile
        self.entries = entries
        self.defaults = defaults
        self.path = path
        self.annotators = annotators

    @property
    def is_tiny(self) -> bool:
        """Every entry is built in (tiny or full-size random): nothing to download (LoRA files
        added to such a profile do not count: its pictures stay meaningless)."""
        return all(e.tiny is not None for kind, section in self.entries.items() if kind not in ("loras", "previews")
                   for e in section.values())

    @property
    def has_tiny_models(self) -> bool:
        """Its networks (SeeCoders, base models, ControlNets) are all the tiny built-in ones; add-on
        files (an IP-Adapter, LoRAs) aside. Such an engine stays fp32 and contiguous unless asked,
        so its pictures do not depend on the machine (``precision``, ``layout``)."""
        nets = [e for kind in ("seecoders", "base_models", "controlnets") for e in self.entries.get(kind, {}).values()]
        return bool(nets) and all(e.tiny is not None and not e.full_random for e in nets)

    @property
    def is_full_random(self) -> bool:
        """Built in, at full size (the ``full-random`` profile)."""
        return self.is_tiny and any(e.full_random for kind in self.entries.values() for e in kind.values())

    @classmethod
    def load(cls, path=None, profile: str = "real") -> "Registry":
        path = Path(path) if path is not None else DEFAULT_CHECKPOINTS
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"model list '{path}' does not exist") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"'{path}' is not valid YAML: {e}") from None
        profiles = (data or {}).get("profiles") if isinstance(data, Mapping) else None
        if not isinstance(profiles, Mapping) or not profiles:
            raise ConfigError(f"'{path}' needs a 'profiles' mapping (e.g. real, tiny)")
        if profile not in profiles:
            raise ConfigError(f"profile '{profile}' is not in '{path}'; profiles: {', '.join(profiles)}")
        return cls.from_dict(profiles[profile], profile=profile, base_dir=path.parent, path=path)

    @classmethod
    def from_dict(cls, data: Mapping, profile: str = "custom", base_dir: Path = Path("."), path=None) -> "Registry":
        if not isinstance(data, Mapping):
            raise ConfigError(f"profile '{profile}' must be a mapping")
        unknown = set(data) - set(KINDS) - {"defaults", "annotators"}
        if unknown:
            raise ConfigError(f"profile '{profile}': unknown section(s) {sorted(unknown)}; sections: {', '.join(KINDS)}, defaults, annotators")
        entries = {}
        for kind in KINDS:
            section = data.get(kind) or {}
            if not isinstance(section, Mapping):
                raise ConfigError(f"profile '{profile}': '{kind}' must be a mapping of name -> entry")
            entries[kind] = {str(n): _parse_entry(kind, str(n), s, base_dir) for n, s in section.items()}
        if not entries["seecoders"] or not entries["base_models"]:
            raise ConfigError(f"profile '{profile}' needs at least one SeeCoder and one base model")
        defaults = dict(data.get("defaults") or {})
        for key, kind in (("seecoder", "seecoders"), ("base_model", "base_models"), ("controlnet", "controlnets"),
                          ("content_controlnet", "controlnets"), ("preview", "previews")):
            if key in defaults and defaults[key] not in entries[kind]:
                raise ConfigError(f"profile '{profile}': default {key} '{defaults[key]}' is not defined under {kind}")
            if key not in defaults and entries[kind]:
                defaults[key] = next(iter(entries[kind]))
        for entry in entries["seecoders"].values():
            paired = entry.option("base_model")
            if paired is not None and paired not in entries["base_models"]:
                raise ConfigError(f"checkpoints.yaml: SeeCoder '{entry.name}': base_model '{paired}' is not defined "
                                  f"under base_models; defined: {', '.join(entries['base_models'])}")
        annotators = _parse_source(data["annotators"], f"profile '{profile}' annotators", base_dir) if data.get("annotators") else ()
        return cls(profile, entries, defaults, path, annotators)

    # ------------------------------------------------------------------ lookup
    def names(self, kind: str) -> List[str]:
        return list(self.entries[kind])

    def entry(self, kind: str, name: str) -> Entry:
        if kind not in self.entries:
            raise ConfigError(f"unknown model kind '{kind}'")
        try:
            return self.entries[kind][name]
        except (KeyError, TypeError):
            known = ", ".join(self.entries[kind]) or "none"
            raise UnknownModelError(
                f"unknown {KIND_LABEL[kind]} '{name}'; defined in the '{self.profile}' profile: {known}"
            ) from None

    def base_model_for(self, seecoder: Optional[str]) -> str:
        """The base model a run with ``seecoder`` and no base model of its own uses: the one the
        SeeCoder's entry pairs it with (``base_model:``, e.g. SeeCoder-Anime with an anime model),
        else the profile's default."""
        entry = self.entries["seecoders"].get(seecoder) if seecoder is not None else None
        paired = entry.option("base_model") if entry is not None else None
        return paired or self.defaults["base_model"]

    # ------------------------------------------------------------------ resolution
    def resolve_file(self, sources: Tuple[Source, ...], what: str, allow_download: bool = True) -> Path:
        """First source found locally, else the first that downloads. Returns a local path."""
        errors = []
        for local_only in (True, False):
            if not local_only and (not allow_download or hub_offline()):
                break
            for src in sources:
                try:
                    path = _fetch_file(src, local_only)
                except _NotFound as e:
                    if not local_only:
                        errors.append(f"{src.describe()}: {e}")
                    continue
                check_sha(path, src, what)
                return path
        tried = "; ".join(errors) if errors else ", ".join(s.describe() for s in sources)
        reason = "offline (HF_HUB_OFFLINE=1 or downloads disabled)" if (not allow_download or hub_offline()) else "download failed"
        raise ModelUnavailableError(
            f"{what} is not available: not found locally and {reason}. Tried: {tried}. "
            "Download the file on a machine with internet access and point a `path:` at it in checkpoints.yaml."
        )

    def available_locally(self, entry: Entry) -> bool:
        """Whether an entry can load without network (tiny, local path, or in the hub cache)."""
        if entry.tiny is not None:
            return True
        for src in entry.sources:
            if src.path is not None and src.path.exists():
                return True
            if src.repo is not None:
                try:
                    if src.file:
                        _fetch_file(src, True)
                        return True
                    from huggingface_hub import try_to_load_from_cache

                    hit = try_to_load_from_cache(src.repo, MODEL_INDEX if not src.subfolder else f"{src.subfolder}/config.json", revision=src.revision, repo_type=src.repo_type)
                    if isinstance(hit, str):
                        return True
                except _NotFound:
                    pass
        return False


class _NotFound(Exception):
    pass


def _fetch_file(src: Source, local_only: bool) -> Path:
    if src.path is not None:
        if not src.path.is_file() and not src.path.is_dir():
            raise _NotFound(f"'{src.path}' does not exist")
        return src.path
    if not src.file:
        raise _NotFound("the source names no file")
    from huggingface_hub import hf_hub_download

    try:
        return Path(
            hf_hub_download(
                src.repo, src.file, subfolder=src.subfolder, revision=src.revision,
                repo_type=src.repo_type, local_files_only=local_only, etag_timeout=5,
            )
        )
    except Exception as e:
        raise _NotFound(type(e).__name__) from None


def check_sha(path: Path, src: Source, what: str) -> None:
    """``ChecksumError`` when ``src`` pins a sha256 that the file at ``path`` does not have."""
    if not src.sha256 or not path.is_file():
        return
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != src.sha256:
        raise ChecksumError(
            f"{what}: '{path}' has sha256 {h.hexdigest()}, expected {src.sha256} (wrong or corrupt file)"
        )
