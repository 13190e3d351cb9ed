"""Augmentation moves landmarks with the image; the flip mirrors MediaPipe indices."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fer_ros.data.augment import FaceAugment, warp
from fer_ros.data.landmarks import mean_template
from fer_ros.vision.mirror import hflip

CKPLUS = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'ckplus48'


def test_flip_twice_is_identity():
    image = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    landmarks = mean_template()
    image2, landmarks2 = hflip(*hflip(image, landmarks))
    assert np.array_equal(image2, image) and np.allclose(landmarks2, landmarks, atol=1e-6)


def test_flip_swaps_eyes_and_mouth_corners():
    _, flipped = hflip(np.zeros((48, 48), np.uint8), mean_template())
    template = mean_template()
    for left, right in ((33, 263), (61, 291)):
        assert np.allclose(flipped[left, 1:], template[right, 1:], atol=1e-6)
        assert flipped[left, 0] == pytest.approx(47 / 48 - template[right, 0], abs=1e-6)
    assert flipped[33, 0] < 0.5 < flipped[263, 0]


def test_flip_matches_facemesh_on_the_flipped_real_image():
    paths = sorted(CKPLUS.glob('happy/*.png'))[:3]
    if not paths:
        pytest.skip(f'CK+48 data not found at {CKPLUS}')
    from fer_ros.data.landmarks import FaceMeshDetector
    detector = FaceMeshDetector()
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        original, mirrored_detection = detector.detect(image), detector.detect(image[:, ::-1].copy())
        _, flipped = hflip(image, original)
        error_px = np.abs(flipped[:, :2] - mirrored_detection[:, :2]).mean() * 48
        unpermuted = original.copy()
        unpermuted[:, 0] = 47 / 48 - unpermuted[:, 0]
        unpermuted_error_px = np.abs(unpermuted[:, :2] - mirrored_detection[:, :2]).mean() * 48
        assert error_px < 1.0 and unpermuted_error_px > 3 * error_px, (path.name, error_px, unpermuted_error_px)
    detector.close()


def test_warp_moves_landmarks_with_pixels():
    image = np.zeros((48, 48), np.uint8)
    image[10, 30] = 255
    landmarks = np.array([[30 / 48, 10 / 48, 0.0]], np.float32)
    matrix = cv2.getRotationMatrix2D((24, 24), 15, 1.1)
    matrix[:, 2] += (2, -3)
    warped, moved = warp(image, landmarks, matrix)
    brightest = np.unravel_index(warped.argmax(), warped.shape)
    assert np.allclose(np.array(brightest[::-1]), moved[0, :2] * 48, atol=1.0)


def test_random_augment_keeps_shapes_and_is_seeded():
    augment = FaceAugment(flip_probability=0.5, erase_probability=1.0)
    image = np.random.default_rng(1).integers(0, 256, (48, 48), dtype=np.uint8)
    torch.manual_seed(5)
    first = augment(image, mean_template())
    torch.manual_seed(5)
    second = augment(image, mean_template())
    assert first[0].shape == (48, 48) and first[0].dtype == np.uint8 and first[1].shape == (468, 3)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
