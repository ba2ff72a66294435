"""Fetch ahead of time every file a profile needs: ``python -m prompt_free.download``.

    python -m prompt_free.download [--profile real] [--checkpoints PATH] [NAME ...]
        [--annotators used|all|none] [--skip-text-encoders] [--check]

Downloads into the Hugging Face cache (verifying sha256 pins) the files of every entry of a
profile, or of the entries named (names as in ``checkpoints.yaml``, any kind), with
huggingface_hub's progress bars; ``--check`` downloads nothing and lists what is present (with
its size on disk) and what is missing (with its size on the hub when the hub answers; offline
"size unknown"). Exit codes: 0 everything is present (or was downloaded), 1 something is
missing or could not be fetched (or a file fails its sha256 pin), 2 a usage error (unknown name,
bad ``checkpoints.yaml``, bad option).

What an entry needs is what the engine loads (``plan``; ``check`` and ``download`` share it):
* single files (a hub ``file`` or a local ``path``): the file, through the entry's ``sources``
  (first found locally, else the first that downloads), as ``Registry.resolve_file`` does;
* a diffusers base model: ``model_index.json`` (which marks it as cached for ``--profile
  auto``), ``unet/`` and ``vae/`` (config and weights), plus ``text_encoder/`` and
  ``tokenizer/`` for the comparison tab's text-based columns (``--skip-text-encoders`` leaves
  them out; single-file base models use ``openai/clip-vit-large-patch14`` for that); a
  diffusers ControlNet: its config and weights. Weights are the safetensors file, or the
  ``.bin`` when a repo has no safetensors; fp16/non-EMA variants, ``.ckpt`` and ONNX files of
  the repos are never fetched;
* detectors (annotators): the files of each ControlNet's default ``preprocessor:`` (``used``),
  of every detector (``all``) or none, found as ``prompt_free.detectors.weights`` finds them.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, TextIO, Tuple

from . import settings
from .detectors import weights
from .detectors.specs import SPECS, WeightFile, resolve_name
from .errors import ChecksumError, ModelUnavailableError, PromptFreeError, UnknownModelError
from .ip_adapter import image_encoder_source
from .registry import DEFAULT_CHECKPOINTS, KIND_LABEL, KINDS, MODEL_INDEX, Entry, Registry, Source
from .text import text_encoder_location

EXIT_OK, EXIT_MISSING, EXIT_USAGE = 0, 1, 2
ANNOTATOR_CHOICES = ("used", "all", "none")
HUB_PROBE_TIMEOUT = 3.0  # seconds the hub gets to answer once, before any per-file request


# ----------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Need:
    """One file an entry needs. ``sources``: alternatives in order (the first found wins), as
    the registry resolves them; ``annotator``: a detector file, found by detectors.weights."""

    owner: str
    what: str
    sources: Tuple[Source, ...]
    annotator: Optional[WeightFile] = None

    @property
    def key(self) -> tuple:
        return (self.sources, self.annotator)

    def describe(self) -> str:
        if not self.sources:
            return f"{self.annotator.filename} (annotator folders)"
        more = len(self.sources) - 1
        return self.sources[0].describe() + (f" (+{more} alternative{'s' if more > 1 else ''})" if more else "")

    def locate(self, registry: Registry, allow_download: bool) -> Path:
        """Its local path (downloading when allowed); ``ModelUnavailableError`` (``ChecksumError``
        for a sha256 mismatch) otherwise."""
        if self.annotator is not None:
            return weights.locate_file(self.annotator, registry, allow_download=allow_download)
        return registry.resolve_file(self.sources, f"{self.owner} {self.what}", allow_download)


def _folder_files(library: str) -> List[Tuple[str, ...]]:
    """The files a from_pretrained of one folder reads, each as (preferred, fallback ...)."""
    if library == "diffusers":
        from diffusers.utils.constants import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME, WEIGHTS_NAME

        return [(CONFIG_NAME,), (SAFETENSORS_WEIGHTS_NAME, WEIGHTS_NAME)]
    if library == "transformers":
        from transformers.utils import CONFIG_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_NAME

        return [(CONFIG_NAME,), (SAFE_WEIGHTS_NAME, WEIGHTS_NAME)]
    from transformers.models.clip.tokenization_clip import VOCAB_FILES_NAMES
    from transformers.tokenization_utils_base import SPECIAL_TOKENS_MAP_FILE, TOKENIZER_CONFIG_FILE

    return [(VOCAB_FILES_NAMES["vocab_file"],), (VOCAB_FILES_NAMES["merges_file"],),
            (TOKENIZER_CONFIG_FILE,), (SPECIAL_TOKENS_MAP_FILE,)]


def _inside(src: Source, sub: Optional[str], filename: str) -> Source:
    """The file ``sub/filename`` of the folder (local or hub repo) that ``src`` names."""
    if src.path is not None:
        return Source(path=src.path / sub / filename if sub else src.path / filename)
    return Source(repo=src.repo, subfolder=sub or None, file=filename, revision=src.revision, repo_type=src.repo_type)


def _folder(owner: str, what: str, src: Source, sub: Optional[str], library: str) -> List[Need]:
    """The files of one diffusers/transformers folder ``sub`` of ``src`` (a missing local
    folder is one missing need)."""
    if src.path is not None and not src.path.is_dir():
        return [Need(owner, what or "weights", (src,))]
    return [
        Need(owner, f"{what} weights".strip() if len(names) > 1 else f"{what} {names[0]}".strip(),
             tuple(_inside(src, sub, n) for n in names))
        for names in _folder_files(library)
    ]


def _file_or_folder(owner: str, what: str, sources: Tuple[Source, ...], library: str) -> List[Need]:
    """One weight file through all ``sources``, or the folder of the first (as the engine loads).
    ``what``: the label ("" for the entry's own weights)."""
    if sources[0].is_single_file:
        return [Need(owner, what or "weights", sources)]
    return _folder(owner, what, sources[0], sources[0].subfolder, library)


def _join(*parts: Optional[str]) -> str:
    return "/".join(p for p in parts if p)


def _base_model_needs(entry: Entry, text_encoders: bool) -> List[Need]:
    owner, src = entry.label, entry.sources[0]
    if entry.format == "diffusers":
        needs = [Need(owner, "model index", (_inside(src, src.subfolder, MODEL_INDEX),))] if src.repo else []
        for what, sub in (("UNet", "unet"), ("VAE", "vae")):
            needs += _folder(owner, what, src, _join(src.subfolder, sub), "diffusers")
    else:
        needs = [Need(owner, "weights", entry.sources)]
        if entry.format == "pfd_unet":
            needs += _file_or_folder(owner, "VAE", entry.option("vae"), "diffusers")
    if text_encoders:
        te_src, te_sub, tok_sub = text_encoder_location(entry)
        needs += _folder(owner, "text encoder", te_src, te_sub, "transformers")
        needs += _folder(owner, "tokenizer", te_src, tok_sub, "tokenizer")
    return needs


def entry_needs(entry: Entry, text_encoders: bool = True) -> List[Need]:
    """The files ``entry`` needs (none for a tiny entry)."""
    if entry.tiny is not None:
        return []
    owner = entry.label
    if entry.kind == "base_models":
        return _base_model_needs(entry, text_encoders)
    if entry.kind in ("controlnets", "previews"):  # a diffusers folder (TAESD: AutoencoderTiny) or a file
        return _file_or_folder(owner, "", entry.sources, "diffusers")
    needs = [Need(owner, "weights", entry.sources)]
    if entry.kind == "seecoders":
        unconditional = entry.option("unconditional")
        if isinstance(unconditional, tuple):  # parsed sources (not zeros / tiny)
            needs.append(Need(owner, "unconditional embedding", unconditional))
    elif entry.kind == "ip_adapters":
        needs += _file_or_folder(owner, "image encoder", (image_encoder_source(entry),), "transformers")
    return needs


def detector_needs(registry: Registry, names: Iterable[str]) -> List[Need]:
    """The weight files of the detectors ``names`` (the detectors' spec table)."""
    needs = []
    for name in dict.fromkeys(resolve_name(n) for n in names):
        for wf in SPECS[name].weights:
            needs.append(Need(f"detector '{name}'", wf.filename, tuple(weights.hub_sources(wf, registry)), wf))
    return needs


def select(registry: Registry, names: Sequence[str] = ()) -> List[Entry]:
    """The entries named (every entry when none is); ``UnknownModelError`` listing the known ones."""
    everything = [e for kind in KINDS for e in registry.entries[kind].values()]
    if not names:
        return everything
    unknown = [n for n in names if all(e.name != n for e in everything)]
    if unknown:
        known = "; ".join(f"{KIND_LABEL[k]}s: {', '.join(registry.names(k))}" for k in KINDS if registry.names(k))
        raise UnknownModelError(
            f"unknown entry name{'s' if len(unknown) > 1 else ''} {', '.join(repr(n) for n in unknown)} in the "
            f"'{registry.profile}' profile. Known entries (quote names with spaces): {known}"
        )
    return [e for n in dict.fromkeys(names) for e in everything if e.name == n]


def plan(registry: Registry, names: Sequence[str] = (), annotators: str = "used", text_encoders: bool = True) -> List[Need]:
    """Every file the named entries (all when none) need, then their detectors' files:
    ``annotators`` is used (the ControlNets' default preprocessors), all or none."""
    if annotators not in ANNOTATOR_CHOICES:
        raise ValueError(f"annotators must be one of {ANNOTATOR_CHOICES}, got {annotators!r}")
    entries = select(registry, names)
    needs = [n for e in entries for n in entry_needs(e, text_encoders)]
    if annotators == "all":
        detectors = list(SPECS)
    elif annotators == "used":
        detectors = [e.option("preprocessor") for e in entries if e.kind == "controlnets" and e.tiny is None]
        detectors = [d for d in detectors if d]
    else:
        detectors = []
    return needs + detector_needs(registry, detectors)


# ----------------------------------------------------------------------------- where things are
@dataclass
class Status:
    """path: where the file is (None: missing). size: bytes on disk, or on the hub when known.
    problem: a sha256 mismatch, or why it could not be fetched."""

    path: Optional[Path] = None
    size: Optional[int] = None
    problem: Optional[str] = None


def _disk_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def local_status(registry: Registry, need: Need) -> Status:
    """Where ``need`` is on this machine (local paths, annotator folders, the hub cache); no network."""
    try:
        path = need.locate(registry, allow_download=False)
    except ChecksumError as e:
        return Status(problem=str(e))
    except ModelUnavailableError:
        return Status()
    return Status(path=path, size=_disk_size(path))


def unique(needs: Iterable[Need]) -> List[Need]:
    """``needs`` without repeats (a file several entries share), in their first order."""
    first: Dict[tuple, Need] = {}
    for n in needs:
        first.setdefault(n.key, n)
    return list(first.values())


def hub_problem(needs: Sequence[Need]) -> Optional[str]:
    """None when the hub can be asked about ``needs``; else why not (offline, no answer), after
    one request of at most ``HUB_PROBE_TIMEOUT`` seconds."""
    src = next((s for n in needs for s in n.sources if s.repo is not None), None)
    if src is None:
        return None
    if settings.hub_offline():
        return "HF_HUB_OFFLINE is set, the hub is not asked"
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    url = hf_hub_url(src.repo, src.file, subfolder=src.subfolder, revision=src.revision, repo_type=src.repo_type)
    try:
        get_hf_file_metadata(url, timeout=HUB_PROBE_TIMEOUT)
    except HfHubHTTPError:
        return None  # it answered; a missing or gated file is reported per file
    except Exception as e:
        return f"the Hugging Face Hub did not answer within {HUB_PROBE_TIMEOUT:g} s ({type(e).__name__})"
    return None


def _hub_file(src: Source) -> tuple:
    """(repo, revision, repo_type, path in the repo) of a hub source."""
    return (src.repo, src.revision, src.repo_type, _join(src.subfolder, src.file))


def hub_sizes(needs: Sequence[Need]) -> Dict[tuple, Optional[int]]:
    """Size on the hub of each hub file of ``needs`` by ``_hub_file`` (None: not in the repo),
    one request per repo; files of repos that did not answer are left out."""
    from huggingface_hub import HfApi

    groups: Dict[tuple, set] = {}
    for repo, revision, repo_type, path in (_hub_file(s) for n in needs for s in n.sources if s.repo is not None):
        groups.setdefault((repo, revision, repo_type), set()).add(path)
    sizes: Dict[tuple, Optional[int]] = {}
    api = HfApi()
    for (repo, revision, repo_type), paths in groups.items():
        try:
            infos = api.get_paths_info(repo, sorted(paths), revision=revision, repo_type=repo_type)
        except Exception:
            continue
        found = {i.path: getattr(i, "size", None) for i in infos}
        sizes.update({(repo, revision, repo_type, p): found.get(p) for p in paths})
    return sizes


def _hub_size(need: Need, sizes: Dict[tuple, Optional[int]]) -> Optional[int]:
    """Size of the file that a download of ``need`` would fetch (its first source on the hub)."""
    hub = [_hub_file(s) for s in need.sources if s.repo is not None]
    return next((sizes[f] for f in hub if sizes.get(f) is not None), None)


def _hub_size_text(need: Need, sizes: Dict[tuple, Optional[int]]) -> str:
    size = _hub_size(need, sizes)
    if size is not None:
        return human(size)
    hub = [_hub_file(s) for s in need.sources if s.repo is not None]
    return "not on hub" if hub and all(f in sizes for f in hub) else "size unknown"


def human(n: int) -> str:
    """Bytes as the hub shows them (decimal units)."""
    if n < 1000:
        return f"{n} B"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"


# ----------------------------------------------------------------------------- check and download
def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def _header(registry: Registry, needs: Sequence[Need], out: TextIO) -> None:
    from huggingface_hub import constants

    print(f"Profile '{registry.profile}' of {registry.path}: {_files(len(unique(needs)))} "
          f"(Hugging Face cache: {constants.HF_HUB_CACHE})", file=out)


def _rows(needs: Sequence[Need], statuses: Dict[tuple, Status], size_text, out: TextIO) -> None:
    owner = None
    for n in needs:
        if n.owner != owner:
            owner = n.owner
            print(owner, file=out)
        st = statuses[n.key]
        if st.path is not None:
            print(f"  present  {human(st.size):>12}  {n.what}: {st.path}", file=out)
        else:
            label = "bad file" if st.problem else "missing"
            print(f"  {label:<7}  {size_text(n):>12}  {n.what}: {n.describe()}", file=out)


def check(registry: Registry, needs: Sequence[Need], out: Optional[TextIO] = None) -> int:
    """List what is present and what is missing, with sizes. EXIT_OK when all is present."""
    out = out or sys.stdout
    statuses = {n.key: local_status(registry, n) for n in unique(needs)}
    missing = [n for n in unique(needs) if statuses[n.key].path is None]
    problem = hub_problem(missing) if missing else None
    sizes = hub_sizes(missing) if missing and problem is None else {}
    _header(registry, needs, out)
    _rows(needs, statuses, lambda n: _hub_size_text(n, sizes), out)
    present = [s for s in statuses.values() if s.path is not None]
    print(f"\nPresent: {_files(len(present))}, {human(sum(s.size for s in present))}.", file=out)
    if not missing:
        print("Everything is present.", file=out)
        return EXIT_OK
    known = [k for k in (_hub_size(n, sizes) for n in missing) if k is not None]
    on_hub = [n for n in missing if any(s.repo is not None for s in n.sources)]
    if problem or not known:
        why = problem or ("the hub did not say" if on_hub else "local paths")
        print(f"Missing: {_files(len(missing))} (size unknown: {why}).", file=out)
    else:
        unknown = len(missing) - len(known)
        print(f"Missing: {_files(len(missing))}, {human(sum(known))}" + (f" + {unknown} of unknown size." if unknown else "."), file=out)
    for n in missing:
        if statuses[n.key].problem:
            print(f"  {statuses[n.key].problem}", file=out)
    if on_hub:
        where = "" if registry.path == DEFAULT_CHECKPOINTS else f" --checkpoints {registry.path}"
        print(f"Fetch them with: python -m prompt_free.download --profile {registry.profile}{where}", file=out)
    if len(on_hub) < len(missing):
        print("Files under local paths are not downloaded: put them there or change checkpoints.yaml.", file=out)
    return EXIT_MISSING


def download(registry: Registry, needs: Sequence[Need], out: Optional[TextIO] = None) -> int:
    """Fetch every missing file (sha256 checked where pinned). EXIT_OK when all is present after."""
    out = out or sys.stdout
    todo = unique(needs)
    statuses = {n.key: local_status(registry, n) for n in todo}
    missing = [n for n in todo if statuses[n.key].path is None and not statuses[n.key].problem]
    failures = [(n, statuses[n.key].problem) for n in todo if statuses[n.key].problem]
    _header(registry, needs, out)
    print(f"{_files(len(todo) - len(missing) - len(failures))} present, {len(missing)} to download.", file=out)
    problem = hub_problem(missing) if missing else None
    for n in missing:
        if problem is not None and any(s.repo is not None for s in n.sources):
            failures.append((n, None))
            continue
        print(f"{n.owner}: {n.what} <- {n.describe()}", file=out, flush=True)
        try:
            path = n.locate(registry, allow_download=True)
        except ModelUnavailableError as e:
            failures.append((n, str(e)))
        else:
            print(f"  {human(_disk_size(path))}  {path}", file=out)
    if not failures:
        print("Everything is present.", file=out)
        return EXIT_OK
    hint = "; unset it to download" if settings.hub_offline() else ""
    why_not = f" (not downloaded: {problem}{hint})" if problem else ""
    print(f"\nCould not fetch {_files(len(failures))}{why_not}:", file=out)
    for n, why in failures:
        print(f"  {n.owner} {n.what}: {n.describe()}" + (f"\n    {why}" if why else ""), file=out)
    return EXIT_MISSING


# ----------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m prompt_free.download",
        description="Download (and verify where pinned) the files a profile of checkpoints.yaml needs, "
                    "or with --check list what is present and what is missing.",
        epilog="Exit codes: 0 everything present, 1 something missing or not fetched, 2 usage error.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="entry names from checkpoints.yaml (default: all)")
    p.add_argument("--profile", help="profile of checkpoints.yaml (default: $PFD_PROFILE, auto meaning real)")
    p.add_argument("--checkpoints", help="the checkpoints.yaml (default: $PFD_CHECKPOINTS or the project's)")
    p.add_argument("--annotators", choices=ANNOTATOR_CHOICES, default="used",
                   help="detector weights: of the ControlNets' default preprocessors (used), of every detector, or none")
    p.add_argument("--skip-text-encoders", action="store_true",
                   help="leave out base models' text encoders (only the comparison's text-based columns use them)")
    p.add_argument("--check", action="store_true", help="download nothing; list present and missing files with sizes")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    profile = args.profile or settings.profile()
    profile = "real" if profile == "auto" else profile
    try:
        registry = Registry.load(args.checkpoints or settings.checkpoints_path(), profile)
        select(registry, args.names)
        if registry.is_tiny:
            print(f"The '{profile}' profile builds its models in memory from small configs: it needs no files.")
            return EXIT_OK
        needs = plan(registry, args.names, args.annotators, not args.skip_text_encoders)
    except PromptFreeError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if not needs:
        print("The selected entries need no files.")
        return EXIT_OK
    try:
        return check(registry, needs) if args.check else download(registry, needs)
    except PromptFreeError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_MISSING
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
