"""Camera-sized frames from face images and video frames (no ROS).

``fer-make-bag`` builds its frames with these functions and ``fer-eval
--protocol frames`` builds the same frames in memory, so both present the
same pixels to the pipeline.
"""

import cv2
import numpy as np


def as_bgr(image: np.ndarray) -> np.ndarray:
    """A uint8 BGR image from a gray or BGR one."""
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image


def place_face(face: np.ndarray, size: tuple[int, int], face_size: int, background: int | None = None) -> np.ndarray:
    """A BGR camera frame with the face image scaled to face_size (longer side) at its centre.

    Around the face the frame repeats the face image's border pixels (as the
    crops of training replicate their borders), or is the gray level ``background``.
    """
    width, height = size
    face = as_bgr(face)
    scale = face_size / max(face.shape[:2])
    face = cv2.resize(face, (round(face.shape[1] * scale), round(face.shape[0] * scale)),
                      interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
    if face.shape[0] > height or face.shape[1] > width:
        raise ValueError(f'a {face_size} px face does not fit in a {width}x{height} frame')
    y, x = (height - face.shape[0]) // 2, (width - face.shape[1]) // 2
    if background is None:
        return cv2.copyMakeBorder(face, y, height - face.shape[0] - y, x, width - face.shape[1] - x,
                                  cv2.BORDER_REPLICATE)
    frame = np.full((height, width, 3), background, np.uint8)
    frame[y:y + face.shape[0], x:x + face.shape[1]] = face
    return frame


def letterbox(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The image scaled to fit ``size`` (width, height), centred on black."""
    width, height = size
    scale = min(width / image.shape[1], height / image.shape[0])
    resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
    frame = np.zeros((height, width, 3), np.uint8)
    y, x = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
    frame[y:y + resized.shape[0], x:x + resized.shape[1]] = resized
    return frame
