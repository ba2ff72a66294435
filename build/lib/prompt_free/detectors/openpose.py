"""OpenPose: body, hand and face networks, the skeleton maps and the body keypoints."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from ..errors import PromptFreeError
from ..images import load_image
from .. import settings
from .nets import load_into, quiet
from .specs import BODY, FACE, HAND

# OpenPose body keypoints (COCO-18 order), as returned by ``pose_keypoints``.
BODY_KEYPOINT_NAMES: Tuple[str, ...] = (
    "nose", "neck",
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)

Keypoint = Optional[Tuple[float, float, float]]


def _body(path: Path):
    with quiet():
        from controlnet_aux.open_pose.body import Body
        from controlnet_aux.open_pose.model import bodypose_model

        net = bodypose_model()
    body = Body.__new__(Body)  # Body.__init__ would unpickle the file itself
    body.model = load_into(net, path, "OpenPose body", drop_first_component=True)
    return body


def _hand(path: Path):
    with quiet():
        from controlnet_aux.open_pose.hand import Hand
        from controlnet_aux.open_pose.model import handpose_model

        net = handpose_model()
    hand = Hand.__new__(Hand)
    hand.model = load_into(net, path, "OpenPose hand", drop_first_component=True)
    return hand


def _face(path: Path):
    with quiet():
        from controlnet_aux.open_pose import face as face_mod

        net = face_mod.FaceNet()
    face = face_mod.Face.__new__(face_mod.Face)
    face.inference_size = face_mod.params["inference_img_size"]
    face.sigma = face_mod.params["gaussian_sigma"]
    face.threshold = face_mod.params["heatmap_peak_thresh"]
    face.model = load_into(net, path, "OpenPose face")
    return face


def _make(nets):
    with quiet():
        from controlnet_aux.open_pose import OpenposeDetector

    return OpenposeDetector(nets[BODY.filename], nets.get(HAND.filename), nets.get(FACE.filename))


def _runner(hand: bool, face: bool):
    def run(impl, rgb, resolution, o):
        return impl(rgb, detect_resolution=resolution, image_resolution=resolution,
                    include_body=True, include_hand=hand, include_face=face, output_type="np")

    return run


NETWORKS = {BODY.filename: _body, HAND.filename: _hand, FACE.filename: _face}
DETECTORS = {
    "openpose": (_make, _runner(False, False)),
    "openpose_hand": (_make, _runner(True, False)),
    "openpose_face": (_make, _runner(False, True)),
    "openpose_full": (_make, _runner(True, True)),
}


def _format_people(candidate, subset, sx: float = 1.0, sy: float = 1.0) -> List[List[Keypoint]]:
    """OpenPose body results (candidate rows x, y, score, id; subset rows of 18 candidate
    indices, total score, part count) -> people as 18 (x, y, score) or None, scaled."""
    people: List[List[Keypoint]] = []
    candidate = np.asarray(candidate, dtype=np.float64).reshape(-1, 4) if len(candidate) else np.zeros((0, 4))
    for person in np.asarray(subset).reshape(-1, 20) if len(subset) else []:
        kps: List[Keypoint] = []
        for idx in person[:18].astype(int):
            if idx < 0 or idx >= len(candidate):
                kps.append(None)
            else:
                x, y, score = candidate[idx][:3]
                kps.append((float(x) * sx, float(y) * sy, float(score)))
        people.append(kps)
    return people


def pose_keypoints(engine, image, annotator_dir=None, *, resolution: int = 512) -> List[List[Keypoint]]:
    """OpenPose body keypoints of every person in ``image``, with the body network held by
    ``engine`` (the one the ``openpose`` detectors use).

    Returns a list of people; each person is a list of 18 entries in ``BODY_KEYPOINT_NAMES``
    order, each ``(x, y, score)`` in pixel coordinates of ``image`` or ``None`` when not found.
    An empty list when nobody is found. The image is shrunk to ``resolution`` on its short side
    for detection when larger. Needs ``body_pose_model.pth`` (``ModelUnavailableError`` otherwise).
    """
    import cv2
    import torch

    rgb = np.asarray(load_image(image, "person photo"), dtype=np.uint8)
    res = settings.DETECT_RESOLUTION.check(resolution)
    body = engine.detector("openpose", annotator_dir).impl.body_estimation
    h0, w0 = rgb.shape[:2]
    if min(h0, w0) > res:
        k = res / min(h0, w0)
        rgb = cv2.resize(rgb, (max(1, round(w0 * k)), max(1, round(h0 * k))), interpolation=cv2.INTER_AREA)
    h, w = rgb.shape[:2]
    try:
        with torch.no_grad():
            candidate, subset = body(np.ascontiguousarray(rgb[:, :, ::-1]))  # the body network expects BGR
    except Exception as e:
        raise PromptFreeError(
            f"pose detection failed on this image ({type(e).__name__}: {str(e)[:200]}); paint or upload the mask instead"
        ) from e
    return _format_people(candidate, subset, w0 / w, h0 / h)
