"""Subject-independent k-fold splits for CK+ (no subject in two folds)."""
import numpy as np
from sklearn.model_selection import StratifiedGroupKFold


def subject_kfold(subjects, labels, num_folds=10, seed=0):
    """List of (train_indices, test_indices), grouped by subject, stratified by label where possible.

    Uses scikit-learn's StratifiedGroupKFold: every subject's images land in
    exactly one test fold, and the folds' label distributions are kept as close
    to the overall one as the grouping allows.
    """
    subjects, labels = np.asarray(subjects), np.asarray(labels)
    if len(np.unique(subjects)) < num_folds:
        raise ValueError(f'{len(np.unique(subjects))} subjects cannot fill {num_folds} folds')
    splitter = StratifiedGroupKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    return [(train, test) for train, test in splitter.split(np.zeros(len(labels)), labels, subjects)]
