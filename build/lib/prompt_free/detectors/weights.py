"""Finding annotator files: local folders first, then the registry's ``annotators:`` sources.

Order for each file: the ``annotator_dir`` argument, ``$PFD_ANNOTATOR_DIR``, then every
``annotators:`` source of the profile in its order: a local folder (``path:``) or a hub repo
(``repo:``, resolved by ``Registry.resolve_file``, so the cache, offline and download rules are
the registry's). In a local folder a file may also be stored as ``<stem>.safetensors``. A file
that names its own repo (MobileSAM) is looked up there instead of the ``annotators:`` repos.
A profile without ``annotators:`` (the tiny one) searches the local folders only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .. import settings
from ..errors import ModelUnavailableError
from ..registry import Registry, Source
from .specs import SPECS, DetectorSpec, WeightFile, resolve_name


class AnnotatorUnavailableError(ModelUnavailableError):
    """A detector's weights are missing or unusable. ``problem`` is the message without the
    advice to upload a ready-made map (which only fits the ControlNet tabs)."""

    def __init__(self, problem: str, map_kind: str):
        self.problem = problem
        super().__init__(f"{problem}, or upload a ready-made {map_kind} map and choose 'use as-is' instead.")


class _NotFound(Exception):
    def __init__(self, looked: List[str]):
        super().__init__("; ".join(looked))
        self.looked = looked


def search_dirs(annotator_dir=None) -> Tuple[Path, ...]:
    """The folders given by the caller and by ``$PFD_ANNOTATOR_DIR``, in that order."""
    dirs: List[Path] = []
    for d in (annotator_dir, settings.annotator_dir()):
        if d is not None and str(d).strip():
            p = Path(d).expanduser()
            if p not in dirs:
                dirs.append(p)
    return tuple(dirs)


def folders_key(annotator_dir=None) -> Tuple[str, ...]:
    """What a cache key needs to know of where weights are looked up."""
    return tuple(str(d) for d in search_dirs(annotator_dir))


def hub_sources(wf: WeightFile, registry: Optional[Registry]) -> List[Source]:
    """The hub files ``wf`` can come from: its own repo, else each hub repo under ``annotators:``."""
    if registry is None or not registry.annotators:
        return []
    if wf.repo is not None:
        return [Source(repo=wf.repo, file=wf.filename)]
    return [Source(repo=s.repo, file=wf.filename, subfolder=s.subfolder, revision=s.revision, repo_type=s.repo_type)
            for s in registry.annotators if s.repo is not None]


def _in_folder(folder: Path, filename: str) -> Optional[Path]:
    p = folder / filename
    for candidate in (p, p.with_suffix(".safetensors")):
        if candidate.is_file():
            return candidate
    return None


def locate(wf: WeightFile, registry: Optional[Registry], dirs: Sequence[Path], *, allow_download: bool) -> Path:
    """Path of ``wf`` (see the module docstring for the order); ``_NotFound`` says where it looked."""
    folders = list(dirs)
    if registry is not None:
        folders += [s.path for s in registry.annotators if s.path is not None and s.path not in folders]
    looked: List[str] = []
    for d in folders:
        found = _in_folder(d, wf.filename)
        if found is not None:
            return found
        looked.append(f"the folder {d}" + ("" if d.is_dir() else " (which does not exist)"))
    if not folders:
        looked.append("no local folder (no annotator_dir given, $PFD_ANNOTATOR_DIR not set)")
    hub = hub_sources(wf, registry)
    if not hub:
        looked.append("no hub repo (this profile has no `annotators:` source in checkpoints.yaml)")
    for src in hub:
        try:
            return registry.resolve_file((src,), f"the annotator file '{wf.filename}'", allow_download)
        except ModelUnavailableError as e:
            from huggingface_hub import constants

            looked.append(f"the Hugging Face cache ({constants.HF_HUB_CACHE})")
            if settings.hub_offline():
                looked.append(f"the hub repo {src.repo} (not asked: offline, HF_HUB_OFFLINE=1)")
            elif not allow_download:
                looked.append(f"the hub repo {src.repo} (not asked: downloads disabled)")
            else:
                looked.append(f"the hub repo {src.repo} ({e})")
    raise _NotFound(looked)


def locate_file(wf: WeightFile, registry: Optional[Registry], annotator_dir=None, *, allow_download: bool) -> Path:
    """Path of one annotator file (order: the module docstring); ``ModelUnavailableError``
    saying where it looked when it is not available."""
    try:
        return locate(wf, registry, search_dirs(annotator_dir), allow_download=allow_download)
    except _NotFound as e:
        raise ModelUnavailableError(f"the annotator file '{wf.filename}' is not available; looked in: {e}") from None


def repos(wf: WeightFile, registry: Optional[Registry]) -> List[str]:
    """The hub repos a file can come from, for messages."""
    return [s.repo for s in hub_sources(wf, registry)] or ([wf.repo] if wf.repo else [])


def find_all(spec: DetectorSpec, registry: Optional[Registry], annotator_dir=None, *,
             allow_download: bool = True) -> Dict[str, Path]:
    """filename -> path of every file ``spec`` needs; one error naming every missing file."""
    dirs = search_dirs(annotator_dir)
    found: Dict[str, Path] = {}
    missing: List[Tuple[WeightFile, List[str]]] = []
    for wf in spec.weights:
        try:
            found[wf.filename] = locate(wf, registry, dirs, allow_download=allow_download)
        except _NotFound as e:
            missing.append((wf, e.looked))
    if missing:
        raise _unavailable(spec, registry, missing)
    return found


def _unavailable(spec: DetectorSpec, registry, missing) -> AnnotatorUnavailableError:
    files = ", ".join(f"'{wf.filename}'" for wf, _ in missing)
    hub = sorted({r for wf, _ in missing for r in repos(wf, registry)})
    plural = len(missing) > 1
    s = "s" if plural else ""
    return AnnotatorUnavailableError(
        f"The '{spec.name}' preprocessor needs the annotator file{s} {files}"
        f"{' (hub repo ' + ', '.join(hub) + ')' if hub else ''}, which {'are' if plural else 'is'} not available. "
        f"Looked in: {'; '.join(missing[0][1])}. Put the file{s} into a folder given as annotator_dir or named "
        "by $PFD_ANNOTATOR_DIR (or under `annotators:` in checkpoints.yaml)",
        spec.map_kind,
    )


def unloadable(spec: DetectorSpec, registry, wf: WeightFile, path: Path, why: str) -> AnnotatorUnavailableError:
    """The error for a file that was found but does not load."""
    hub = repos(wf, registry)
    source = f" from the hub repo {', '.join(hub)}" if hub else ""
    return AnnotatorUnavailableError(
        f"The '{spec.name}' preprocessor could not load its annotator file '{path}': {why}. "
        f"Replace the file with '{wf.filename}'{source}",
        spec.map_kind,
    )


def available(name: str, registry: Optional[Registry], annotator_dir=None) -> bool:
    """Whether every file detector ``name`` needs is in a local folder or the Hugging Face cache
    (no network). ``registry``: the profile's (None: local folders only)."""
    spec = SPECS[resolve_name(name)]
    dirs = search_dirs(annotator_dir)
    for wf in spec.weights:
        try:
            locate(wf, registry, dirs, allow_download=False)
        except _NotFound:
            return False
    return True
