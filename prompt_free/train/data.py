"""Training data: image folders and webdataset-style .tar shards, aspect-ratio buckets,
a deterministic batch order, and the VAE latent cache.

* Sources: a folder is searched recursively for images and for .tar shards; a .tar file is
  read with the standard ``tarfile`` module (its image members: .jpg/.jpeg/.png/.webp/.bmp;
  other members such as .json/.txt are ignored); a glob pattern expands to either. Shards must
  be uncompressed tar (members are then read by byte offset, without re-reading the archive).
* Buckets: sizes (W, H), both multiples of ``bucket_step`` (64). Each image goes to the bucket
  whose aspect ratio is closest to its own, is scaled to cover it and centre-cropped. The
  SeeCoder reference is that same bucket-sized image in [0, 1] (the paper encodes the target
  image itself).
* Order: micro-batch ``k`` is a pure function of (seed, k): epoch ``k // per_epoch`` shuffles
  every bucket with ``random.Random(f"{seed}/{epoch}")``, cuts it into batches (the last one
  filled up by wrapping around the same bucket) and shuffles the batches. Resuming at step N
  therefore continues with exactly the batches an uninterrupted run would have used.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import math
import os
import random
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from PIL import Image

from ..errors import ConfigError
from ..images import load_image, open_lazy

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
INDEX_VERSION = 1

Bucket = Tuple[int, int]  # (W, H)


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class ImageRecord:
    """One training image: a file, or a member of a .tar shard (``key`` = ``shard::member``)."""

    key: str
    path: str  # the file on disk (the image, or the shard holding it)
    mtime_ns: int
    width: int  # after EXIF orientation
    height: int
    offset: int = -1  # tar members: byte offset of the data in the shard
    size: int = 0

    def read_bytes(self) -> bytes:
        if self.offset < 0:
            return Path(self.path).read_bytes()
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return f.read(self.size)

    def open(self) -> Image.Image:
        return load_image(self.read_bytes(), f"training image '{self.key}'")


def _oriented_size(img: Image.Image) -> Tuple[int, int]:
    w, h = img.size
    try:
        if img.getexif().get(0x0112) in (5, 6, 7, 8):  # rotated by 90 degrees
            return h, w
    except Exception:
        pass
    return w, h


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _scan_file(path: str, warnings: List[str]) -> Optional[ImageRecord]:
    try:
        with open_lazy(path, f"training image '{path}'") as img:
            w, h = _oriented_size(img)
    except Exception as e:
        warnings.append(f"skipped '{path}': {e}")
        return None
    return ImageRecord(key=path, path=path, mtime_ns=os.stat(path).st_mtime_ns, width=w, height=h)


def _scan_tar(path: str, warnings: List[str]) -> List[ImageRecord]:
    out = []
    mtime = os.stat(path).st_mtime_ns
    try:
        with tarfile.open(path, "r:") as tf, open(path, "rb") as raw:
            for m in tf:
                if not m.isfile() or not _is_image(m.name):
                    continue
                raw.seek(m.offset_data)
                data = raw.read(m.size)
                try:
                    with open_lazy(io.BytesIO(data), f"training image '{m.name}'") as img:
                        w, h = _oriented_size(img)
                except Exception as e:
                    warnings.append(f"skipped '{path}::{m.name}': {e}")
                    continue
                out.append(ImageRecord(f"{path}::{m.name}", path, mtime, w, h, m.offset_data, m.size))
    except tarfile.ReadError as e:
        raise ConfigError(
            f"'{path}' is not a readable uncompressed .tar shard ({e}); compressed shards are not supported"
        ) from None
    return out


def scan_images(paths: Sequence[str]) -> Tuple[List[ImageRecord], List[str]]:
    """All images under ``paths`` (folders, .tar shards, glob patterns), sorted by key."""
    files: List[str] = []
    for entry in paths:
        entry = os.path.expanduser(str(entry))
        matches = sorted(glob.glob(entry, recursive=True)) if glob.has_magic(entry) else [entry]
        if not matches or not any(os.path.exists(m) for m in matches):
            raise ConfigError(f"data path '{entry}' does not exist")
        for m in matches:
            if os.path.isdir(m):
                for root, dirs, names in os.walk(m, followlinks=True):
                    dirs.sort()
                    for n in sorted(names):
                        if _is_image(n) or n.lower().endswith(".tar"):
                            files.append(os.path.join(root, n))
            else:
                files.append(m)
    warnings: List[str] = []
    records: List[ImageRecord] = []
    for f in dict.fromkeys(files):  # de-duplicated, order kept
        if f.lower().endswith(".tar"):
            records.extend(_scan_tar(f, warnings))
        elif _is_image(f):
            r = _scan_file(f, warnings)
            if r is not None:
                records.append(r)
        else:
            warnings.append(f"skipped '{f}': not an image or .tar shard")
    records.sort(key=lambda r: r.key)
    if not records:
        raise ConfigError(f"no training images found under {list(paths)}")
    return records, warnings


def save_index(path: Path, records: Sequence[ImageRecord], sources: Sequence[str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"version": INDEX_VERSION, "sources": list(sources), "images": [asdict(r) for r in records]}))
    os.replace(tmp, path)


def load_index(path: Path, sources: Sequence[str]) -> Optional[List[ImageRecord]]:
    """The saved image list, if it was made from the same sources (else None)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("version") != INDEX_VERSION or data.get("sources") != list(sources):
        return None
    return [ImageRecord(**r) for r in data["images"]]


# ----------------------------------------------------------------------------- buckets
def make_buckets(resolution: int, spec="auto", max_aspect: float = 2.0, step: int = 64) -> List[Bucket]:
    """Bucket sizes (W, H), multiples of ``step``.

    ``auto``: for each width, the largest height (multiple of step) keeping W*H within
    resolution^2, aspect ratio at most ``max_aspect`` (512: 384x640, 448x576, 512x512,
    576x448, 640x384). ``square``: just resolution x resolution. A list: used as given.
    """
    if isinstance(spec, (list, tuple)):
        return [tuple(int(v) for v in b) for b in spec]
    if spec == "square":
        return [(resolution, resolution)]
    if spec != "auto":
        raise ConfigError(f"unknown bucket spec {spec!r}")
    area = resolution * resolution
    out = set()
    w = step
    while w <= area // step:
        h = (area // w) // step * step
        if h >= step and max(w, h) / min(w, h) <= max_aspect + 1e-9:
            out.add((w, h))
        w += step
    out.add((resolution, resolution))
    return sorted(out, key=lambda b: b[0] / b[1])


def assign_bucket(width: int, height: int, buckets: Sequence[Bucket]) -> int:
    """Index of the bucket with the closest aspect ratio (log scale); ties: the first."""
    a = math.log(width / height)
    return min(range(len(buckets)), key=lambda i: (abs(math.log(buckets[i][0] / buckets[i][1]) - a), i))


def resize_to_bucket(img: Image.Image, bucket: Bucket) -> Image.Image:
    """Scale to cover the bucket (bicubic), then centre-crop to it."""
    bw, bh = bucket
    w, h = img.size
    scale = max(bw / w, bh / h)
    nw, nh = max(bw, round(w * scale)), max(bh, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - bw) // 2, (nh - bh) // 2
    return img.crop((left, top, left + bw, top + bh))


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float32 in [0, 1] (as torchvision ToTensor)."""
    w, h = img.size
    t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(h, w, 3)
    return t.permute(2, 0, 1).float().div_(255.0)


def load_reference(path, bucket: Optional[Bucket], buckets: Sequence[Bucket]) -> Tuple[torch.Tensor, Bucket]:
    """A held-out reference image -> ((3, H, W) in [0, 1], its bucket)."""
    img = load_image(path, f"sample reference '{path}'")
    if bucket is None:
        bucket = buckets[assign_bucket(*img.size, buckets)]
    return image_to_tensor(resize_to_bucket(img, bucket)), bucket


def list_reference_images(paths: Sequence[str]) -> List[str]:
    out = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, names in os.walk(p):
                dirs.sort()
                out.extend(os.path.join(root, n) for n in sorted(names) if _is_image(n))
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise ConfigError(f"sample reference '{p}' does not exist")
    return out


# ----------------------------------------------------------------------------- order
class BatchPlan:
    """Deterministic micro-batches: ``batch(k)`` -> (bucket index, record indices)."""

    def __init__(self, bucket_of: Sequence[int], batch_size: int, seed: int):
        self.batch_size = batch_size
        self.seed = seed
        groups: Dict[int, List[int]] = {}
        for i, b in enumerate(bucket_of):
            groups.setdefault(b, []).append(i)
        self.groups = dict(sorted(groups.items()))
        self.per_epoch = sum(math.ceil(len(g) / batch_size) for g in self.groups.values())
        self._cache: Dict[int, List[Tuple[int, List[int]]]] = {}

    def epoch(self, e: int) -> List[Tuple[int, List[int]]]:
        if e not in self._cache:
            rng = random.Random(f"{self.seed}/{e}")
            batches = []
            for b, members in self.groups.items():
                idx = list(members)
                rng.shuffle(idx)
                n = math.ceil(len(idx) / self.batch_size) * self.batch_size
                idx = [idx[i % len(idx)] for i in range(n)]  # fill the last batch by wrapping
                batches.extend((b, idx[i : i + self.batch_size]) for i in range(0, n, self.batch_size))
            rng.shuffle(batches)
            if len(self._cache) > 2:
                self._cache.pop(min(self._cache))
            self._cache[e] = batches
        return self._cache[e]

    def batch(self, k: int) -> Tuple[int, List[int]]:
        e, i = divmod(k, self.per_epoch)
        return self.epoch(e)[i]


# ----------------------------------------------------------------------------- latent cache
class LatentCache:
    """VAE latent-distribution parameters (mean and log-variance, (8, h, w) float32) per
    (image, bucket), one safetensors file each, keyed by file path + mtime + bucket + VAE tag.

    Storing the distribution (not one sample) keeps training identical with or without the
    cache: each step still draws its own latent sample from the seeded generator.
    """

    VERSION = "v1"

    def __init__(self, folder, vae_tag: str):
        self.folder = Path(folder)
        self.vae_tag = vae_tag

    def key(self, record: ImageRecord, bucket: Bucket) -> str:
        raw = f"{self.VERSION}|{self.vae_tag}|{record.key}|{record.mtime_ns}|{bucket[0]}x{bucket[1]}"
        return hashlib.sha256(raw.encode()).hexdigest()

    def file(self, record: ImageRecord, bucket: Bucket) -> Path:
        k = self.key(record, bucket)
        return self.folder / k[:2] / f"{k}.safetensors"

    def has(self, record: ImageRecord, bucket: Bucket) -> bool:
        return self.file(record, bucket).is_file()

    def load(self, record: ImageRecord, bucket: Bucket) -> torch.Tensor:
        from safetensors.torch import load_file

        return load_file(str(self.file(record, bucket)))["moments"]

    def save(self, record: ImageRecord, bucket: Bucket, moments: torch.Tensor) -> None:
        from safetensors.torch import save_file

        f = self.file(record, bucket)
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name(f.name + f".{os.getpid()}.tmp")
        save_file({"moments": moments.detach().float().contiguous().cpu()}, str(tmp), metadata={"key": record.key})
        os.replace(tmp, f)


# ----------------------------------------------------------------------------- dataset
class MicroBatchDataset(torch.utils.data.Dataset):
    """Item ``k`` is the whole micro-batch ``k`` of the plan: pixels (B, 3, H, W) in [0, 1],
    plus the cached latent moments (B, 8, H/8, W/8) when a cache is given."""

    def __init__(self, records, buckets, bucket_of, plan: BatchPlan, cache: Optional[LatentCache] = None):
        self.records = records
        self.buckets = buckets
        self.bucket_of = bucket_of
        self.plan = plan
        self.cache = cache

    def __len__(self) -> int:  # nominal; the sampler decides what is read
        return 2**62

    def load_pixels(self, i: int) -> torch.Tensor:
        return image_to_tensor(resize_to_bucket(self.records[i].open(), self.buckets[self.bucket_of[i]]))

    def __getitem__(self, k: int):
        b, idx = self.plan.batch(k)
        bucket = self.buckets[b]
        item = {
            "index": k,
            "keys": [self.records[i].key for i in idx],
            "pixels": torch.stack([self.load_pixels(i) for i in idx]),
            "moments": None,
        }
        if self.cache is not None:
            item["moments"] = torch.stack([self.cache.load(self.records[i], bucket) for i in idx])
        return item


class MicroBatchSampler(torch.utils.data.Sampler):
    """This process's micro-batch indices from local position ``start``:
    ``(start + m) * world + rank`` for m = 0, 1, ... (``count`` of them)."""

    def __init__(self, start: int, count: int, world: int = 1, rank: int = 0):
        self.start, self.count, self.world, self.rank = start, count, world, rank

    def __iter__(self) -> Iterator[int]:
        for m in range(self.start, self.start + self.count):
            yield m * self.world + self.rank

    def __len__(self) -> int:
        return self.count


def _identity(x):
    return x


def make_loader(dataset: MicroBatchDataset, start: int, count: int, world: int, rank: int, num_workers: int):
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        sampler=MicroBatchSampler(start, count, world, rank),
        num_workers=num_workers,
        collate_fn=_identity,
        prefetch_factor=2 if num_workers else None,
        persistent_workers=False,
    )
