"""Dataset listing, fer2013.csv parsing, landmark cache and face preparation on real images."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_ros.data.datasets import (FaceDataset, fer2013_csv_samples, fer2013_folder_samples, folder_samples,
                                   join_samples, prepare_faces)
from fer_ros.data.landmarks import LandmarkCache
from fer_ros.labels import FER2013_LABELS
from fer_ros.training.train import training_samples

FER2013 = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'fer2013'


def require_fer2013():
    if not FER2013.is_dir():
        pytest.skip(f'FER-2013 data not found at {FER2013}')


def test_fer2013_val_folder():
    require_fer2013()
    samples = fer2013_folder_samples(FER2013, 'val')
    assert len(samples) == 3589 and samples.class_names == FER2013_LABELS
    assert samples.class_counts()[FER2013_LABELS.index('disgusted')] == 56


def test_a_refit_trains_on_train_and_val_joined():
    require_fer2013()
    train, val = (fer2013_folder_samples(FER2013, split) for split in ('train', 'val'))
    joined = training_samples('fer2013', FER2013, ['train', 'val'])
    assert len(joined) == len(train) + len(val) == 28709 + 3589
    assert joined.images[len(train)] == val.images[0] and joined.labels[len(train)] == val.labels[0]
    assert np.array_equal(joined.class_counts(), train.class_counts() + val.class_counts())
    assert training_samples('fer2013', FER2013, 'val').images == val.images
    with pytest.raises(ValueError, match='different classes'):
        join_samples([val, folder_samples(FER2013 / 'val', ['happy', 'sad', 'angry', 'disgusted', 'scared',
                                                            'surprised', 'neutral'])])


def test_fer2013_csv_rows(tmp_path):
    require_fer2013()
    paths = sorted((FER2013 / 'val' / 'happy').glob('*.jpg'))[:3]
    csv_path = tmp_path / 'fer2013.csv'
    rows = ['emotion,pixels,Usage']
    for path in paths:
        pixels = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        rows.append(f'3,{" ".join(map(str, pixels.ravel()))},PublicTest')
    csv_path.write_text('\n'.join(rows) + '\n')
    samples = fer2013_csv_samples(csv_path, 'val')
    assert len(samples) == 3 and list(samples.labels) == [3, 3, 3]
    assert np.array_equal(samples.images[0], cv2.imread(str(paths[0]), cv2.IMREAD_GRAYSCALE))


def test_landmark_cache_and_prepared_faces(tmp_path):
    require_fer2013()
    samples = folder_samples(FER2013 / 'val')
    samples = samples.subset(np.arange(0, len(samples), 600))
    cache = LandmarkCache(tmp_path / 'cache')
    stats = cache.extract(samples.images, log=lambda line: None)
    assert stats['extracted'] == len(samples) and 0 <= stats['without_face'] < len(samples)
    reloaded = LandmarkCache(tmp_path / 'cache')
    assert len(reloaded) == len(samples)
    faces = prepare_faces(samples, reloaded)
    assert faces.images.shape == (len(samples), 48, 48) and faces.found.sum() == len(samples) - stats['without_face']
    item = FaceDataset(faces)[0]
    assert item['image'].shape == (1, 48, 48) and item['landmarks'].shape == (468, 3)
    found_landmarks = faces.landmarks[faces.found]
    assert found_landmarks[:, :, :2].min() > -0.1 and found_landmarks[:, :, :2].max() < 1.1
