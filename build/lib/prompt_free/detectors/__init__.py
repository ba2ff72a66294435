"""Control-map detectors ("preprocessors") by name, built on ``controlnet_aux``.

A detector turns a picture into the map a ControlNet expects (edges, pose skeleton, depth ...).
Build one with ``engine.detector(name, annotator_dir)``: the engine holds it, and the networks
detectors share, so each is built once per engine. Where the weight files are looked up:
``prompt_free.detectors.weights``. No UI code lives here.

    det = engine.detector("depth")                 # ModelUnavailableError when weights are missing
    hint = det(image, resolution=512)              # RGB PIL map at the image's size
    SPECS["depth"].kind                            # "depth": the ControlNet kind the map is for
    available("depth", engine.registry)            # weights present locally? (no network)
    people = pose_keypoints(engine, person_photo)  # OpenPose body keypoints
"""

from .detector import Detector
from .openpose import BODY_KEYPOINT_NAMES, pose_keypoints
from .specs import ALIASES, KINDS, SPECS, DetectorSpec, WeightFile, resolve_name
from .weights import AnnotatorUnavailableError, available, folders_key

__all__ = [
    "ALIASES", "AnnotatorUnavailableError", "BODY_KEYPOINT_NAMES", "Detector", "DetectorSpec", "KINDS", "SPECS",
    "WeightFile", "available", "folders_key", "pose_keypoints", "resolve_name",
]
