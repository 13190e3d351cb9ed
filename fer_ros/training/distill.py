"""Teacher probabilities for knowledge distillation (``data.teacher_probs``, the ``distill`` loss term).

A teacher file (``teacher_probs.npz``, written by fer-teacher-probs or scripts/gpu_session.py)
holds, per split, each image's content key (the sha1 of its file, as the
landmark cache keys images), its label and every teacher model's softmax
output on the plain and the mirrored crop: ``<split>_probs`` float16
[models, 2, N, C], with ``class_names`` and ``model_names``. The target of a
training image is the mean over the chosen models and both views.
"""
from pathlib import Path

import numpy as np

from fer_ros.data.landmarks import content_key


class TeacherFileError(ValueError):
    """A teacher file that does not fit the training data (labels, models or images)."""


def teacher_probabilities(paths, images, class_names, models=None, split='train'):
    """Mean teacher probabilities float32 [N, C] of ``images`` (paths or arrays), in their order.

    ``paths``: one teacher file or a list (their models are pooled); ``models``: names to use (default all).
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    keys, pooled, count, used = None, 0.0, 0, []
    for path in paths:
        with np.load(path) as teacher:
            names = tuple(str(name) for name in teacher['class_names'])
            if names != tuple(class_names):
                raise TeacherFileError(f'{path}: teacher labels {names} differ from the data\'s {tuple(class_names)}')
            if keys is None:
                keys = teacher[f'{split}_keys']
            elif not np.array_equal(keys, teacher[f'{split}_keys']):
                raise TeacherFileError(f'{paths}: the teacher files cover different images')
            chosen = [row for row, name in enumerate(teacher['model_names']) if models is None or name in models]
            used += [str(teacher['model_names'][row]) for row in chosen]
            pooled = pooled + teacher[f'{split}_probs'][chosen].astype(np.float32).sum(axis=(0, 1))
            count += 2 * len(chosen)
    missing = sorted(set(models or ()) - set(used))
    if missing or not used:
        raise TeacherFileError(f'teacher models {missing or models} not found in {paths}')
    row_of = {key: row for row, key in enumerate(keys)}
    out = np.empty((len(images), len(class_names)), np.float32)
    for index, image in enumerate(images):
        row = row_of.get(content_key(image))
        if row is None:
            raise TeacherFileError(f'{paths}: no teacher output for training image {index} '
                                   f'({image if not isinstance(image, np.ndarray) else "an array"})')
        out[index] = pooled[row] / count
    return out
