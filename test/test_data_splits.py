"""CK+ subject-independent k-fold on the real CK+48 file names."""
from pathlib import Path

import numpy as np
import pytest

from fer_ros.data.datasets import ckplus_samples, subject_id
from fer_ros.data.splits import subject_kfold

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
