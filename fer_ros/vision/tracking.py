"""Stable face ids across frames: greedy box-IoU matching with a short memory."""

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    inter_w = max(0, min(ax1, bx1) - max(a[0], b[0]))
    inter_h = max(0, min(ay1, by1) - max(a[1], b[1]))
    intersection = inter_w * inter_h
    union = a[2] * a[3] + b[2] * b[3] - intersection
    return intersection / union if union > 0 else 0.0


class FaceIds:
    """Face ids unique across the streams that share this object and, being random, across restarts
    (REP-155 asks for unique ids): ``face_`` + 6 hex digits, never handed out twice by one object."""

    def __init__(self):
        self._issued: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            while (face_id := f'face_{secrets.token_hex(3)}') in self._issued:
                pass
            self._issued.add(face_id)
            return face_id


@dataclass
class Track:
    track_id: str
    box: tuple[int, int, int, int]
    last_seen: float
    probabilities: np.ndarray | None = field(default=None, repr=False)
    labels: tuple[str, ...] = ()


class FaceTracker:
    """Assign each face box the id of the best-overlapping recent track.

    A track survives max_age_s seconds without a match, in the time given to
    :meth:`update` (the frames' stamps in the node, so a bag replayed at any
    rate ages tracks alike); time running backwards (a looped bag) ends every
    track. With smoothing in (0, 1], probabilities are an exponential moving
    average per track: smoothed = smoothing * new + (1 - smoothing) * previous
    (1 = no smoothing), restarted when the labels change (another model).
    ``new_id`` makes the id of a new track (default: :class:`FaceIds`).
    """

    def __init__(self, iou_threshold: float = 0.3, max_age_s: float = 1.0, smoothing: float = 1.0,
                 new_id: Callable[[], str] | None = None):
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f'smoothing must be in (0, 1], got {smoothing}')
        self.iou_threshold = iou_threshold
        self.max_age_s = max_age_s
        self.smoothing = smoothing
        self._tracks: dict[str, Track] = {}
        self._new_id = new_id or FaceIds()

    def update(self, boxes: list[tuple[int, int, int, int]], now: float) -> list[str]:
        """Ids for the boxes of one frame, in the same order."""
        self._tracks = {tid: t for tid, t in self._tracks.items() if 0.0 <= now - t.last_seen <= self.max_age_s}
        pairs = sorted(((box_iou(box, track.box), index, tid)
                        for index, box in enumerate(boxes) for tid, track in self._tracks.items()), reverse=True)
        ids: list[str | None] = [None] * len(boxes)
        taken = set()
        for iou, index, tid in pairs:
            if iou < self.iou_threshold:
                break
            if ids[index] is None and tid not in taken:
                ids[index] = tid
                taken.add(tid)
        for index, box in enumerate(boxes):
            if ids[index] is None:
                ids[index] = self._new_id()
                self._tracks[ids[index]] = Track(ids[index], box, now)
            track = self._tracks[ids[index]]
            track.box, track.last_seen = box, now
        return ids

    def smooth(self, track_id: str, probabilities: np.ndarray, labels: tuple[str, ...] = ()) -> np.ndarray:
        """Temporal smoothing of one track's class probabilities (``labels``: their class names)."""
        track = self._tracks[track_id]
        restart = track.probabilities is None or track.labels != tuple(labels)
        track.labels = tuple(labels)
        if restart or self.smoothing == 1.0:
            track.probabilities = probabilities
        else:
            track.probabilities = self.smoothing * probabilities + (1.0 - self.smoothing) * track.probabilities
        return track.probabilities
