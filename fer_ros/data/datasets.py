"""Facial-expression datasets: FER-2013 (folders or fer2013.csv), CK+48, any ImageFolder tree.

Loading is two steps: a ``*_samples`` function lists the images (paths or
in-memory arrays) with label indices, then :func:`prepare_faces` aligns every
image with :func:`fer_ros.vision.alignment.align_face` on its cached MediaPipe
landmarks (exactly what the ROS node does at inference) into uint8 crops and
crop-normalised landmarks held in memory. Images without a detected face keep
their own framing (resized) and get the mean landmark template, with
``found=False``.
"""
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from fer_ros.data.landmarks import load_image, mean_template
from fer_ros.labels import CKPLUS_LABELS, FER2013_LABELS, canonical_label
from fer_ros.vision.alignment import align_face

IMAGE_SUFFIXES = {'.jpg', '.jpeg', '.png', '.bmp', '.pgm'}
FER2013_CSV_USAGE = {'train': 'Training', 'val': 'PublicTest', 'test': 'PrivateTest'}


@dataclass
class ImageSamples:
    """Images (paths or uint8 arrays), label indices into ``class_names``, optional subject ids."""
    images: list
    labels: np.ndarray
    class_names: tuple
    subjects: Optional[np.ndarray] = None

    def __len__(self):
        return len(self.images)

    def subset(self, indices):
        subjects = None if self.subjects is None else self.subjects[indices]
        return ImageSamples([self.images[i] for i in indices], self.labels[indices], self.class_names, subjects)

    def class_counts(self):
        return np.bincount(self.labels, minlength=len(self.class_names))


def join_samples(parts) -> ImageSamples:
    """One ImageSamples of several with the same classes (e.g. train and val for a refit)."""
    names = {part.class_names for part in parts}
    if len(names) != 1:
        raise ValueError(f'cannot join samples with different classes: {sorted(names)}')
    subjects = (np.concatenate([part.subjects for part in parts])
                if all(part.subjects is not None for part in parts) else None)
    return ImageSamples([image for part in parts for image in part.images],
                        np.concatenate([part.labels for part in parts]), parts[0].class_names, subjects)


def folder_samples(root, class_names=None):
    """ImageFolder layout ``root/<class>/<image>``; folder names map through canonical_label.

    ``class_names`` fixes the label order (default: sorted canonical names found).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f'dataset folder {root} not found')
    folders = {canonical_label(folder.name): folder for folder in sorted(root.iterdir()) if folder.is_dir()}
    class_names = tuple(class_names or sorted(folders))
    unknown = set(folders) - set(class_names)
    if unknown:
        raise ValueError(f'{root} has classes {sorted(unknown)} outside {class_names}')
    images, labels = [], []
    for label, name in enumerate(class_names):
        if name not in folders:
            continue
        paths = sorted(p for p in folders[name].iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        images += paths
        labels += [label] * len(paths)
    return ImageSamples(images, np.array(labels, dtype=np.int64), class_names)


def fer2013_folder_samples(root, split='train'):
    """FER-2013 Kaggle folders ``root/<split>/<class>/*.jpg`` in the original label order."""
    return folder_samples(Path(root) / split, FER2013_LABELS)


def fer2013_csv_samples(csv_path, split='train'):
    """The original fer2013.csv (emotion, pixels, Usage); split train/val/test or a Usage value."""
    usage = FER2013_CSV_USAGE.get(split, split)
    images, labels = [], []
    with open(csv_path, newline='') as handle:
        for row in csv.DictReader(handle):
            if row['Usage'].strip() == usage:
                images.append(np.array(row['pixels'].split(), dtype=np.uint8).reshape(48, 48))
                labels.append(int(row['emotion']))
    if not images:
        raise ValueError(f'no rows with Usage {usage!r} in {csv_path}')
    return ImageSamples(images, np.array(labels, dtype=np.int64), FER2013_LABELS)


def subject_id(path):
    """CK+ subject id from a file name: ``S010_004_00000017.png`` -> ``S010``."""
    return Path(path).name.split('_')[0]


def ckplus_samples(root):
    """CK+48 folders ``root/<class>/S###_###_########.png`` with subject ids."""
    samples = folder_samples(root, CKPLUS_LABELS)
    samples.subjects = np.array([subject_id(path) for path in samples.images])
    return samples


def load_samples(kind, path, split='train', class_names=None):
    """Samples of a dataset given as ``kind``: fer2013 | fer2013_csv | ckplus | folder.

    ``class_names`` fixes a folder dataset's label order (e.g. a model's labels).
    """
    if kind == 'fer2013':
        return fer2013_folder_samples(path, split)
    if kind == 'fer2013_csv':
        return fer2013_csv_samples(path, split)
    if kind == 'ckplus':
        return ckplus_samples(path)
    if kind == 'folder':
        return folder_samples(path, class_names)
    raise ValueError(f'unknown dataset kind {kind!r}')


@dataclass
class PreparedFaces:
    """Aligned crops uint8 [N, S, S], landmarks float32 [N, 468, 3], found bool [N], labels [N];
    optionally teacher probabilities float32 [N, C] for distillation."""
    images: np.ndarray
    landmarks: np.ndarray
    found: np.ndarray
    labels: np.ndarray
    class_names: tuple
    teacher: Optional[np.ndarray] = None


def prepare_face(image, landmarks, found, input_size=48):
    """Align one image on its crop-normalised landmarks, or resize it with the template if not found."""
    if not found:
        return cv2.resize(image, (input_size, input_size), interpolation=cv2.INTER_AREA), mean_template()
    height, width = image.shape[:2]
    return align_face(image, landmarks * np.array([width, height, width], np.float32), input_size)


def prepare_faces(samples, landmark_cache=None, input_size=48):
    """Align all samples with their cached landmarks (no cache: resize + template)."""
    count = len(samples)
    images = np.empty((count, input_size, input_size), np.uint8)
    landmarks = np.empty((count, len(mean_template()), 3), np.float32)
    found = np.zeros(count, bool)
    for index, item in enumerate(samples.images):
        image = load_image(item)
        points, found[index] = landmark_cache.lookup(item) if landmark_cache is not None else (None, False)
        images[index], landmarks[index] = prepare_face(image, points, found[index], input_size)
    return PreparedFaces(images, landmarks, found, samples.labels.copy(), samples.class_names)


class FaceDataset(Dataset):
    """Prepared faces as tensors: image [1, S, S] float in [0, 1], landmarks, landmark_mask, label."""

    def __init__(self, faces: PreparedFaces, augment=None):
        self.faces = faces
        self.augment = augment

    def __len__(self):
        return len(self.faces.labels)

    def __getitem__(self, index):
        image, landmarks = self.faces.images[index], self.faces.landmarks[index]
        if self.augment is not None:
            image, landmarks = self.augment(image, landmarks)
        item = {
            'image': torch.from_numpy(image.astype(np.float32) / 255.0)[None],
            'landmarks': torch.from_numpy(np.ascontiguousarray(landmarks, dtype=np.float32)),
            'landmark_mask': torch.tensor(bool(self.faces.found[index])),
            'label': torch.tensor(int(self.faces.labels[index])),
        }
        if self.faces.teacher is not None:
            item['teacher'] = torch.from_numpy(self.faces.teacher[index])
        return item
