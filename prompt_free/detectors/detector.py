"""A built detector, and building one from its spec, its family module and the engine's cache."""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping

import numpy as np
from PIL import Image

from .. import cancel
from ..errors import CheckpointError, InvalidSettingError, PromptFreeError
from ..images import load_image
from ..settings import DETECT_RESOLUTION
from .depth import DETECTORS as DEPTH, NETWORKS as DEPTH_NETWORKS
from .edges import DETECTORS as EDGES, NETWORKS as EDGES_NETWORKS
from .lineart import DETECTORS as LINEART, NETWORKS as LINEART_NETWORKS
from .mlsd import DETECTORS as MLSD, NETWORKS as MLSD_NETWORKS
from .normalbae import DETECTORS as NORMALBAE, NETWORKS as NORMALBAE_NETWORKS
from .openpose import DETECTORS as OPENPOSE, NETWORKS as OPENPOSE_NETWORKS
from .seg import DETECTORS as SEG, NETWORKS as SEG_NETWORKS
from .simple import DETECTORS as SIMPLE, NETWORKS as SIMPLE_NETWORKS
from .specs import SPECS, DetectorSpec
from .weights import find_all, folders_key, unloadable

# Each family module's tables, imported by name (not through the package, which imports this
# module): detector name -> (make(networks by file name) -> impl, run(impl, rgb, resolution,
# options) -> map), and weight file name -> build(path) -> loaded network (CPU, eval mode).
_FAMILIES = (
    (SIMPLE, SIMPLE_NETWORKS), (OPENPOSE, OPENPOSE_NETWORKS), (DEPTH, DEPTH_NETWORKS),
    (NORMALBAE, NORMALBAE_NETWORKS), (EDGES, EDGES_NETWORKS), (MLSD, MLSD_NETWORKS),
    (LINEART, LINEART_NETWORKS), (SEG, SEG_NETWORKS),
)
MAKERS: Dict[str, tuple] = {name: pair for detectors, _ in _FAMILIES for name, pair in detectors.items()}
NETWORKS: Dict[str, Callable] = {name: build for _, networks in _FAMILIES for name, build in networks.items()}


class Detector:
    """``detector(image, resolution=512, **options) -> RGB PIL map`` at the image's size.
    ``impl`` is the controlnet_aux object (or network) it wraps."""

    def __init__(self, spec: DetectorSpec, impl: Any, run: Callable[..., np.ndarray]):
        self.spec = spec
        self.name = spec.name
        self.impl = impl
        self._run = run

    def __repr__(self) -> str:
        return f"Detector({self.name!r})"

    def options(self, options: Mapping[str, Any]) -> Dict[str, Any]:
        """Defaults merged with ``options`` (None values mean default); unknown names rejected."""
        unknown = [k for k in options if k not in self.spec.options]
        if unknown:
            allowed = ", ".join(self.spec.options) or "none"
            raise InvalidSettingError(
                f"the '{self.name}' preprocessor has no option {', '.join(repr(k) for k in unknown)} (options: {allowed})"
            )
        merged = dict(self.spec.options)
        merged.update({k: v for k, v in options.items() if v is not None})
        return merged

    def __call__(self, image, *, resolution: int = 512, **options) -> Image.Image:
        import torch

        opts = self.options(options)
        res = DETECT_RESOLUTION.check(resolution)
        rgb = np.asarray(load_image(image, "control image"), dtype=np.uint8)
        h0, w0 = rgb.shape[:2]
        cancel.check()  # Stop and the request's time limit reach the preprocessors
        try:
            with torch.no_grad():
                out = self._run(self.impl, rgb, res, opts)
        except PromptFreeError:
            raise
        except Exception as e:
            msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise PromptFreeError(
                f"The '{self.name}' preprocessor failed on this image ({type(e).__name__}{': ' + msg if msg else ''}). "
                f"Try another image or resolution, or upload a ready-made {self.spec.map_kind} map and choose "
                f"'use as-is' instead."
            ) from e
        cancel.check()
        out = _u8(out)
        if out.shape[:2] != (h0, w0):
            import cv2

            shrink = out.shape[0] > h0 and out.shape[1] > w0
            interp = cv2.INTER_NEAREST if self.spec.nearest else (cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            out = cv2.resize(out, (w0, h0), interpolation=interp)
        return Image.fromarray(_u8(out), "RGB")


def _u8(x) -> np.ndarray:
    """Any detector output -> contiguous uint8 HxWx3."""
    a = np.asarray(x)
    if a.dtype != np.uint8:
        a = np.clip(np.nan_to_num(a.astype(np.float32)), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]
    return np.ascontiguousarray(a)


def build(engine, name: str, annotator_dir=None) -> Detector:
    """Detector ``name`` with its networks, each network held by ``engine`` (shared by every
    detector that uses the same file). Called through ``Engine.detector``, which holds the result."""
    spec = SPECS[name]
    paths = find_all(spec, engine.registry, annotator_dir, allow_download=engine.allow_download)
    folders = folders_key(annotator_dir)
    nets = {wf.filename: engine.cached(("detector networks", wf.filename, folders),
                                       lambda wf=wf: _load_network(engine, spec, wf, paths[wf.filename]))
            for wf in spec.weights}
    make, run = MAKERS[name]
    return Detector(spec, make(nets), run)


def _load_network(engine, spec: DetectorSpec, wf, path):
    try:
        return NETWORKS[wf.filename](path)
    except CheckpointError as e:
        raise unloadable(spec, engine.registry, wf, path, str(e)) from None
    except Exception as e:  # building the network itself failed (library versions ...)
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise unloadable(spec, engine.registry, wf, path, f"{type(e).__name__}{': ' + first if first else ''}") from e
