"""Valence/arousal of each tracked face over a recent window, for the page's traces."""

from collections import deque


class AffectTraces:
    """(stamp, valence, arousal) of each face over the last ``window_s`` seconds of message time.

    A face that has not been seen for ``window_s`` is forgotten. A stamp that goes back by more than the
    window (a bag replayed again, a restarted camera) starts the traces afresh.
    """

    def __init__(self, window_s: float = 30.0):
        if window_s <= 0:
            raise ValueError(f'window_s must be > 0, got {window_s}')
        self.window_s = window_s
        self._points: dict[str, deque] = {}
        self._latest = None

    def add(self, stamp: float, faces: list[dict]) -> None:
        """Add one frame's faces (dicts with face_id, valence, arousal) seen at ``stamp`` seconds."""
        if self._latest is None or stamp < self._latest - self.window_s:
            self._points.clear()
            self._latest = stamp
        self._latest = max(self._latest, stamp)
        for face in faces:
            self._points.setdefault(face['face_id'], deque()).append(
                (stamp, float(face['valence']), float(face['arousal'])))
        horizon = self._latest - self.window_s
        for face_id in list(self._points):
            points = self._points[face_id]
            while points and points[0][0] < horizon:
                points.popleft()
            if not points:
                del self._points[face_id]

    def snapshot(self) -> dict[str, list[tuple[float, float, float]]]:
        """face_id -> its points, oldest first."""
        return {face_id: list(points) for face_id, points in self._points.items()}
