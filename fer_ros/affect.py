"""Valence and arousal from class probabilities.

Each label has a point on Russell's circumplex of affect (approximate
coordinates of the basic emotions, in [-1, 1]); a face's valence and arousal
are the probability-weighted means of those points, so they stay in [-1, 1]
and move smoothly with the probabilities.
"""

from collections.abc import Sequence

import numpy as np

from fer_ros import labels as L

CIRCUMPLEX = {
    L.NEUTRAL: (0.0, 0.0),
    L.HAPPY: (0.8, 0.5),
    L.SURPRISED: (0.2, 0.8),
    L.ANGRY: (-0.6, 0.7),
    L.SCARED: (-0.65, 0.75),
    L.DISGUSTED: (-0.7, 0.35),
    L.SAD: (-0.7, -0.4),
    L.CONTEMPTUOUS: (-0.5, 0.2),
}


def valence_arousal(probabilities: np.ndarray, label_names: Sequence[str]) -> tuple[float, float]:
    """Probability-weighted circumplex point of one face."""
    points = np.array([CIRCUMPLEX[name] for name in label_names], dtype=np.float64)
    valence, arousal = np.asarray(probabilities, dtype=np.float64) @ points
    return float(np.clip(valence, -1, 1)), float(np.clip(arousal, -1, 1))
