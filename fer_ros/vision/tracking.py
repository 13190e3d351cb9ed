"""Stable face ids across frames: greedy box-IoU matching with a short memory."""

from dataclasses import dataclass, field

import numpy as np


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    inter_w = max(0, min(ax1, bx1) - max(a[0], b[0]))
    inter_h = max(0, min(ay1, by1) - max(a[1], b[1]))
    intersection = inter_w * inter_h
    union = a[2] * a[3] + b[2] * b[3] - intersection
    return intersection / union if union > 0 else 0.0


@dataclass
class Track:
    track_id: str
    box: tuple[int, int, int, int]
    last_seen: float
    probabilities: np.ndarray | None = field(default=None, repr=False)


class FaceTracker:
    """Assign each face box the id of the best-overlapping recent track.

    A track survives max_age_s seconds without a match. With smoothing in
    (0, 1], probabilities are an exponential moving average per track:
    smoothed = smoothing * new + (1 - smoothing) * previous (1 = no smoothing).
    """

    def __init__(self, iou_threshold: float = 0.3, max_age_s: float = 1.0, smoothing: float = 1.0):
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f'smoothing must be in (0, 1], got {smoothing}')
        self.iou_threshold = iou_threshold
        self.max_age_s = max_age_s
        self.smoothing = smoothing
        self._tracks: dict[str, Track] = {}
        self._next_id = 0

    def update(self, boxes: list[tuple[int, int, int, int]], now: float) -> list[str]:
        """Ids for the boxes of one frame, in the same order."""
        self._tracks = {tid: t for tid, t in self._tracks.items() if now - t.last_seen <= self.max_age_s}
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
                ids[index] = f'face_{self._next_id}'
                self._next_id += 1
                self._tracks[ids[index]] = Track(ids[index], box, now)
            track = self._tracks[ids[index]]
            track.box, track.last_seen = box, now
        return ids

    def smooth(self, track_id: str, probabilities: np.ndarray) -> np.ndarray:
        """Temporal smoothing of one track's class probabilities."""
        track = self._tracks[track_id]
        restart = track.probabilities is None or track.probabilities.shape != probabilities.shape
        if restart or self.smoothing == 1.0:
            track.probabilities = probabilities
        else:
            track.probabilities = self.smoothing * probabilities + (1.0 - self.smoothing) * track.probabilities
        return track.probabilities
