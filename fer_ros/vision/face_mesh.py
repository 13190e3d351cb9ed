"""Face detection and 468-point landmarks with MediaPipe FaceMesh (CPU)."""

from dataclasses import dataclass

import cv2
import numpy as np

NUM_LANDMARKS = 468


@dataclass(frozen=True)
class DetectedFace:
    """One face: landmarks in image pixels (z in the same scale as x) and its box."""

    landmarks: np.ndarray  # [468, 3] float32
    box: tuple[int, int, int, int]  # x, y, width, height, clipped to the image


def landmark_box(landmarks: np.ndarray, image_width: int, image_height: int) -> tuple[int, int, int, int]:
    """Tight box around the landmarks, clipped to the image."""
    x0, y0 = np.floor(landmarks[:, :2].min(axis=0)).astype(int)
    x1, y1 = np.ceil(landmarks[:, :2].max(axis=0)).astype(int)
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, image_width), min(y1, image_height)
    return int(x0), int(y0), int(max(x1 - x0, 0)), int(max(y1 - y0, 0))


class FaceMeshDetector:
    """MediaPipe FaceMesh over BGR frames; several faces per frame.

    video_mode=True lets MediaPipe track landmarks between consecutive frames
    of one stream (faster); False treats every frame on its own (deterministic,
    the right choice for unrelated images and offline evaluation).
    """

    def __init__(self, max_faces: int = 4, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, video_mode: bool = False):
        import mediapipe as mp  # heavy import, only when a detector is made

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=not video_mode, max_num_faces=max_faces, refine_landmarks=False,
            min_detection_confidence=min_detection_confidence, min_tracking_confidence=min_tracking_confidence)

    def detect(self, image_bgr: np.ndarray) -> list[DetectedFace]:
        height, width = image_bgr.shape[:2]
        result = self._mesh.process(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
        faces = []
        for face in result.multi_face_landmarks or ():
            points = np.array([(p.x, p.y, p.z) for p in face.landmark[:NUM_LANDMARKS]], dtype=np.float32)
            points *= np.array([width, height, width], dtype=np.float32)
            box = landmark_box(points, width, height)
            if box[2] > 1 and box[3] > 1:
                faces.append(DetectedFace(points, box))
        return faces

    def close(self) -> None:
        self._mesh.close()
