"""CK+ subject-independent k-fold on the real CK+48 file names."""
from pathlib import Path

import numpy as np
import pytest

from fer_ros.data.datasets import ckplus_samples, subject_id
from fer_ros.data.splits import subject_kfold
from fer_ros.training.kfold import fold_split

CKPLUS = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'ckplus48'


def test_subject_id_from_file_name():
    assert subject_id('anger/S010_004_00000017.png') == 'S010'


def test_ckplus_folds_never_share_a_subject():
    if not CKPLUS.is_dir():
        pytest.skip(f'CK+48 data not found at {CKPLUS}')
    samples = ckplus_samples(CKPLUS)
    assert len(samples) == 981 and len(set(samples.subjects)) == 118
    folds = subject_kfold(samples.subjects, samples.labels, num_folds=10)
    test_indices = np.concatenate([test for _, test in folds])
    assert sorted(test_indices) == list(range(len(samples)))
    fold_of_subject = {}
    for fold, (train, test) in enumerate(folds):
        assert not set(samples.subjects[train]) & set(samples.subjects[test])
        for subject in set(samples.subjects[test]):
            assert fold_of_subject.setdefault(subject, fold) == fold


def test_rotating_validation_keeps_test_validation_and_training_subjects_apart():
    if not CKPLUS.is_dir():
        pytest.skip(f'CK+48 data not found at {CKPLUS}')
    samples = ckplus_samples(CKPLUS)
    folds = subject_kfold(samples.subjects, samples.labels, num_folds=10)
    validation_folds = []
    for fold in range(10):
        train, val, test = fold_split(folds, fold, 'rotating')
        assert np.array_equal(test, folds[fold][1])
        assert sorted(np.concatenate([train, val, test])) == list(range(len(samples)))  # nothing lost
        parts = [set(samples.subjects[indices]) for indices in (train, val, test)]
        assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
        validation_folds.append(next(k for k, (_, held_out) in enumerate(folds) if np.array_equal(held_out, val)))
    assert validation_folds == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    train, val, test = fold_split(folds, 4, 'held_out')  # the usual protocol validates on the test fold
    assert np.array_equal(val, test) and np.array_equal(train, folds[4][0])
    with pytest.raises(ValueError, match='kfold_validation'):
        fold_split(folds, 0, 'test_fold')
    with pytest.raises(ValueError, match='at least 3 folds'):
        fold_split(folds[:2], 0, 'rotating')
