"""Training augmentation applied consistently to a crop and its landmarks.

Crops are uint8 [S, S]; landmarks are crop-normalised [468, 3] (x, y in
[0, 1]; OpenCV pixel convention: pixel i is at i / S). One affine matrix combines the
horizontal flip, rotation, scale and the random-crop shift, so image and
landmarks move together. Random numbers come from torch's global RNG, which
DataLoader seeds per worker and training checkpoints save for an exact resume.
"""
import math

import cv2
import numpy as np
import torch

from fer_ros.vision.mirror import hflip


def warp(image, landmarks, matrix):
    """Apply a 2x3 pixel affine to the crop (reflected border) and its landmarks."""
    size = image.shape[0]
    warped = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    points = landmarks.copy()
    points[:, :2] = (landmarks[:, :2] * size) @ matrix[:, :2].T / size + matrix[:, 2] / size
    points[:, 2] = landmarks[:, 2] * math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    return warped, points.astype(np.float32)


def random_erase(image, probability, area=(0.02, 0.15), aspect=(0.3, 3.3)):
    """Zhong et al. random erasing: fill one random rectangle with uniform noise."""
    if float(torch.rand(())) >= probability:
        return image
    size = image.shape[0]
    target_area = size * size * float(torch.empty(()).uniform_(*area))
    ratio = math.exp(float(torch.empty(()).uniform_(math.log(aspect[0]), math.log(aspect[1]))))
    height = min(size, max(1, round(math.sqrt(target_area * ratio))))
    width = min(size, max(1, round(math.sqrt(target_area / ratio))))
    top = int(torch.randint(0, size - height + 1, ()))
    left = int(torch.randint(0, size - width + 1, ()))
    erased = image.copy()
    erased[top:top + height, left:left + width] = torch.randint(0, 256, (height, width), dtype=torch.uint8).numpy()
    return erased


class FaceAugment:
    """Random flip, small affine (rotation, scale), random-crop shift and random erasing."""

    def __init__(self, flip_probability=0.5, max_rotation_deg=10.0, max_scale=0.1, max_shift_px=4,
                 erase_probability=0.25):
        self.flip_probability = flip_probability
        self.max_rotation_deg = max_rotation_deg
        self.max_scale = max_scale
        self.max_shift_px = max_shift_px
        self.erase_probability = erase_probability

    def random_matrix(self, size):
        """Rotation and scale about the crop centre, then an integer shift (random crop)."""
        angle = float(torch.empty(()).uniform_(-self.max_rotation_deg, self.max_rotation_deg))
        scale = 1.0 + float(torch.empty(()).uniform_(-self.max_scale, self.max_scale))
        matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
        matrix[:, 2] += torch.randint(-self.max_shift_px, self.max_shift_px + 1, (2,)).numpy()
        return matrix

    def __call__(self, image, landmarks):
        if float(torch.rand(())) < self.flip_probability:
            image, landmarks = hflip(image, landmarks)
        image, landmarks = warp(image, landmarks, self.random_matrix(image.shape[0]))
        return random_erase(image, self.erase_probability), landmarks


class FeatureAugment:
    """Augmentation of cached feature maps: the flip was applied before the trunk (the cache holds
    both); here a random shift of whole cells (border cells repeated), with the landmarks moved along."""

    def __init__(self, flip_probability=0.5, max_shift_cells=1):
        self.flip_probability = flip_probability
        self.max_shift_cells = max_shift_cells

    def flip(self):
        """Whether this sample uses the mirrored crop's features."""
        return float(torch.rand(())) < self.flip_probability

    def shift(self, features, landmarks):
        """features [C, h, w] and crop-normalised landmarks shifted by the same random offset."""
        limit = self.max_shift_cells
        if not limit:
            return features, landmarks
        dx, dy = (int(v) for v in torch.randint(-limit, limit + 1, (2,)))
        height, width = features.shape[-2:]
        padded = torch.nn.functional.pad(features[None], (limit, limit, limit, limit), mode='replicate')[0]
        shifted = padded[:, limit - dy:limit - dy + height, limit - dx:limit - dx + width]
        points = landmarks.copy()
        points[:, 0] += dx / width
        points[:, 1] += dy / height
        return shifted, points
