"""The per-frame emotion pipeline without ROS: detect, align, infer, track.

The ROS node and the offline rosbag evaluation both run frames through
EmotionPipeline, so they produce the same predictions for the same images.
"""

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fer_ros.affect import valence_arousal
from fer_ros.vision.alignment import align_face
from fer_ros.vision.face_mesh import FaceMeshDetector
from fer_ros.vision.mirror import mirror_averaged
from fer_ros.vision.tracking import FaceIds, FaceTracker

if TYPE_CHECKING:  # PyTorch is imported only where it is used
    from fer_ros.model.compiled import CompiledClassifier
    from fer_ros.model.inference import ExpressionClassifier
    from fer_ros.vision.torch_face_mesh import TorchFaceMesh

    Classifier = CompiledClassifier | ExpressionClassifier


@dataclass(frozen=True)
class FaceEmotion:
    """The expression estimate for one face of one frame."""

    face_id: str
    box: tuple[int, int, int, int]
    labels: tuple[str, ...]
    probabilities: np.ndarray
    valence: float
    arousal: float
    model: str

    @property
    def label(self) -> str:
        return self.labels[int(np.argmax(self.probabilities))]

    @property
    def confidence(self) -> float:
        return float(np.max(self.probabilities))


def largest_face(faces: list[FaceEmotion]) -> FaceEmotion | None:
    """The face with the largest box (the one scored against a frame's label), or None."""
    return max(faces, key=lambda face: face.box[2] * face.box[3]) if faces else None


@dataclass(frozen=True)
class DetectedFaces:
    """One frame's faces, aligned for the classifier: :meth:`EmotionPipeline.detect`'s output."""

    stream: str
    now: float
    boxes: list[tuple[int, int, int, int]]
    crops: np.ndarray  # uint8 [N, S, S]
    landmarks: np.ndarray  # float32 [N, 468, 3], crop-normalised


LANDMARK_BACKENDS = ('mediapipe', 'torch')


@dataclass(frozen=True)
class PipelineSettings:
    max_faces: int = 4
    min_detection_confidence: float = 0.5
    video_mode: bool = True
    track_iou_threshold: float = 0.3
    track_max_age_s: float = 1.0
    smoothing: float = 1.0
    seen_crops: int = 64
    landmark_backend: str = 'mediapipe'  # or 'torch' (fer_ros.vision.torch_face_mesh; no video_mode tracking)
    landmark_device: str = 'cpu'
    mirror_average: bool = False  # classify each face and its mirror image, average (twice the classifier time)

    def validate(self) -> None:
        if self.landmark_backend not in LANDMARK_BACKENDS:
            raise ValueError(f'landmark_backend must be one of {LANDMARK_BACKENDS}, got {self.landmark_backend!r}')
        if not 1 <= self.max_faces <= 32:
            raise ValueError(f'max_faces must be in [1, 32], got {self.max_faces}')
        if not 0.0 <= self.min_detection_confidence <= 1.0:
            raise ValueError(f'min_detection_confidence must be in [0, 1], got {self.min_detection_confidence}')
        if not 0.0 < self.track_iou_threshold <= 1.0:
            raise ValueError(f'track_iou_threshold must be in (0, 1], got {self.track_iou_threshold}')
        if self.track_max_age_s < 0.0:
            raise ValueError(f'track_max_age_s must be >= 0, got {self.track_max_age_s}')
        if not 0.0 < self.smoothing <= 1.0:
            raise ValueError(f'smoothing must be in (0, 1], got {self.smoothing}')
        if self.seen_crops < 0:
            raise ValueError(f'seen_crops must be >= 0, got {self.seen_crops}')


class EmotionPipeline:
    """Frames in, FaceEmotion lists out; one detector and tracker per stream.

    The classifier can be replaced at any time (swap_classifier): a frame
    uses the classifier that was active when its inference started.
    """

    def __init__(self, classifier: 'Classifier', settings: PipelineSettings = PipelineSettings()):
        settings.validate()
        self.settings = settings
        self._classifier = classifier
        # stream -> (detector, tracker, the detector settings it was built with)
        self._streams: dict[str, tuple['FaceMeshDetector | TorchFaceMesh', FaceTracker, tuple]] = {}
        self._trackers: dict[str, FaceTracker] = {}
        self._face_ids = FaceIds()  # one id space for all streams
        self._seen = deque(maxlen=settings.seen_crops)
        self._seen_lock = threading.Lock()

    @property
    def classifier(self) -> 'Classifier':
        return self._classifier

    def swap_classifier(self, classifier: 'Classifier') -> 'Classifier':
        """Make classifier the active one; returns the previous one."""
        previous, self._classifier = self._classifier, classifier
        return previous

    def seen_faces(self) -> tuple[np.ndarray, np.ndarray]:
        """The most recent aligned crops [N,48,48] and their landmarks [N,468,3]."""
        with self._seen_lock:
            items = list(self._seen)
        if not items:
            return np.zeros((0, 0, 0), np.uint8), np.zeros((0, 0, 3), np.float32)
        crops, landmarks = zip(*items)
        return np.stack(crops), np.stack(landmarks)

    def update_settings(self, settings: PipelineSettings) -> None:
        """New settings from the next frame on: trackers keep their faces; a stream's detector is rebuilt
        when a detector setting changed (max_faces, min_detection_confidence, video_mode, backend)."""
        settings.validate()
        if settings.seen_crops != self.settings.seen_crops:
            with self._seen_lock:
                self._seen = deque(self._seen, maxlen=settings.seen_crops)
        self.settings = settings

    @staticmethod
    def _detector_settings(s: PipelineSettings) -> tuple:
        return s.max_faces, s.min_detection_confidence, s.video_mode, s.landmark_backend, s.landmark_device

    def _stream(self, name: str) -> tuple['FaceMeshDetector | TorchFaceMesh', FaceTracker]:
        s = self.settings
        if name in self._streams and self._streams[name][2] != self._detector_settings(s):
            self._streams.pop(name)[0].close()
        if name not in self._streams:
            if s.landmark_backend == 'torch':
                from fer_ros.vision.torch_face_mesh import TorchFaceMesh
                detector = TorchFaceMesh(s.max_faces, s.min_detection_confidence, device=s.landmark_device)
            else:
                detector = FaceMeshDetector(s.max_faces, s.min_detection_confidence, video_mode=s.video_mode)
            tracker = self._trackers.get(name) or FaceTracker(new_id=self._face_ids)
            self._trackers[name] = tracker
            self._streams[name] = (detector, tracker, self._detector_settings(s))
        detector, tracker, _ = self._streams[name]
        tracker.iou_threshold, tracker.max_age_s, tracker.smoothing = \
            s.track_iou_threshold, s.track_max_age_s, s.smoothing
        return detector, tracker

    def open_streams(self, streams: list[str], image_size: tuple[int, int] = (480, 640)) -> None:
        """Start each stream's detector now, on a blank frame (MediaPipe starts lazily, on its first frame)."""
        blank = np.zeros((*image_size, 3), np.uint8)
        for stream in streams:
            detector, _ = self._stream(stream)
            detector.detect(blank)

    def process(self, image_bgr: np.ndarray, stream: str = 'default', now: float | None = None) -> list[FaceEmotion]:
        """All faces of one frame, inferred in one batch."""
        return self.classify(self.detect(image_bgr, stream, now))

    def detect(self, image_bgr: np.ndarray, stream: str = 'default', now: float | None = None) -> DetectedFaces:
        """Find and align the faces of one frame (the first half of :meth:`process`).

        :meth:`detect` and :meth:`classify` may run on two threads, one frame apart, as long as each
        runs on one thread and a stream's frames reach :meth:`classify` in order.
        """
        detector, _ = self._stream(stream)
        faces = detector.detect(image_bgr)
        aligned = [align_face(image_bgr, face.landmarks) for face in faces]
        crops = np.stack([crop for crop, _ in aligned]) if aligned else np.zeros((0, 0, 0), np.uint8)
        landmarks = np.stack([points for _, points in aligned]) if aligned else np.zeros((0, 0, 3), np.float32)
        return DetectedFaces(stream, time.monotonic() if now is None else now, [face.box for face in faces],
                             crops, landmarks)

    def classify(self, detected: DetectedFaces) -> list[FaceEmotion]:
        """Classify, track and smooth the faces :meth:`detect` found (the second half of :meth:`process`)."""
        tracker = self._trackers[detected.stream]
        if not detected.boxes:
            tracker.update([], detected.now)
            return []
        classifier = self._classifier
        if self.settings.mirror_average:
            probabilities = mirror_averaged(classifier.predict, detected.crops, detected.landmarks)
        else:
            probabilities = classifier.predict(detected.crops, detected.landmarks)
        with self._seen_lock:
            self._seen.extend(zip(detected.crops, detected.landmarks))
        ids = tracker.update(detected.boxes, detected.now)
        labels = tuple(classifier.labels)
        results = []
        for box, face_id, face_probabilities in zip(detected.boxes, ids, probabilities):
            smoothed = tracker.smooth(face_id, face_probabilities, labels)
            valence, arousal = valence_arousal(smoothed, labels)
            results.append(FaceEmotion(face_id, box, labels, smoothed.astype(np.float32),
                                       valence, arousal, classifier.name))
        return results

    def close(self) -> None:
        for detector, _, _ in self._streams.values():
            detector.close()
        self._streams.clear()
