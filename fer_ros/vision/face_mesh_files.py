"""MediaPipe's face mesh files in the installed wheel, checked (no PyTorch: the serving path uses this).

``face_landmark.tflite`` (Apache License 2.0, Copyright The MediaPipe Authors)
is both the landmark model and the face-pretrained backbone of the default
expression model; it is checked against :data:`FACE_LANDMARK_SHA256`
(mediapipe 0.10.21): another graph would silently give other features.
"""
import hashlib
import os
from pathlib import Path

FACE_LANDMARK_SHA256 = '1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814'
GRAPH_INPUT_SIZE = 192
# Stage name (feature-map side at a 192 px input) -> (graph tensor index, channels).
STAGE_TENSORS = {'48px': (53, 32), '24px': (83, 64), '12px': (113, 128), '6px': (141, 128)}


class FaceMeshGraphError(ValueError):
    """The installed face mesh graph is missing or not the one the features were trained on."""


def mediapipe_model_dir() -> Path:
    """The ``modules`` folder of the installed mediapipe wheel (face detection and face landmark graphs),
    or ``$FER_ROS_MEDIAPIPE_MODULES``: a copy of it on a machine without mediapipe (a GPU server on numpy 2)."""
    override = os.environ.get('FER_ROS_MEDIAPIPE_MODULES')
    if override:
        return Path(override)
    import mediapipe
    return Path(mediapipe.__file__).resolve().parent / 'modules'


def face_landmark_path() -> Path:
    """face_landmark.tflite inside the installed mediapipe wheel."""
    return mediapipe_model_dir() / 'face_landmark' / 'face_landmark.tflite'


def checked_face_landmark_path(path=None) -> Path:
    """The face mesh file (default: the installed wheel's) after checking it against FACE_LANDMARK_SHA256."""
    path = Path(path) if path else face_landmark_path()
    if not path.is_file():
        raise FaceMeshGraphError(f'{path} not found: fer_ros needs mediapipe 0.10.21 installed')
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != FACE_LANDMARK_SHA256:
        raise FaceMeshGraphError(f'{path} has sha256 {digest}, expected {FACE_LANDMARK_SHA256} '
                                 '(mediapipe 0.10.21): the face features would differ from training')
    return path
