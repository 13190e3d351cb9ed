"""Mirror images of aligned faces, and classification averaged over a face and its mirror image.

Crops are uint8 [S, S] (or [N, S, S]); landmarks are crop-normalised
[..., 468, 3] in the OpenCV pixel convention (pixel i is at i / S), so the
mirror maps x to (S - 1) / S - x and swaps MediaPipe's left and right points.
"""
import numpy as np

from fer_ros.model.facemesh_constants import MIRROR_PERMUTATION

MIRROR = np.asarray(MIRROR_PERMUTATION)


def hflip_landmarks(landmarks, size):
    """Landmarks [..., 468, 3] of the mirrored crop of side ``size``: left/right landmarks swapped."""
    flipped = np.array(np.asarray(landmarks)[..., MIRROR, :], np.float32)
    flipped[..., 0] = (size - 1) / size - flipped[..., 0]
    return flipped


def hflip(image, landmarks):
    """Mirror a crop [S, S] and its landmarks."""
    return np.ascontiguousarray(image[:, ::-1]), hflip_landmarks(landmarks, image.shape[1])


def mirror_averaged(predict, crops, landmarks=None) -> np.ndarray:
    """The mean of ``predict(crops, landmarks)`` on the faces and on their mirror images, in one batch of 2N.

    ``predict`` maps uint8 crops [M, S, S] and landmarks [M, 468, 3] (or None) to probabilities [M, C]
    (a classifier's ``predict``). The result is the same for a face and for its mirror image.
    """
    crops = np.asarray(crops)
    count, size = len(crops), crops.shape[-1]
    both_crops = np.concatenate([crops, crops[:, :, ::-1]])
    both_landmarks = None
    if landmarks is not None:
        landmarks = np.asarray(landmarks, np.float32)
        both_landmarks = np.concatenate([landmarks, hflip_landmarks(landmarks, size)])
    probabilities = predict(both_crops, both_landmarks)
    return ((probabilities[:count] + probabilities[count:]) / 2).astype(np.float32)
