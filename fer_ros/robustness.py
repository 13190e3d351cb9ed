"""Adversarial robustness self-check of a loaded expression classifier (no ROS).

On recently seen face crops the reference is the model's own clean prediction
(no labels needed): the flip rate is the share of predictions an attack
changes. On a labelled dataset folder the reference is the true label:
clean and attacked accuracy. Epsilons are L-infinity bounds in 1/255 units.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from fer_ros.labels import canonical_label
from fer_ros.model.attacks import fgsm, pgd
from fer_ros.model.inference import ExpressionClassifier
from fer_ros.vision.alignment import align_face
from fer_ros.vision.face_mesh import FaceMeshDetector

ATTACKS = ('fgsm', 'pgd')
PGD_STEPS = 10
BATCH_SIZE = 64
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp')
# Small dataset crops are upscaled before landmark detection (FaceMesh misses
# most faces in 48 px crops).
DETECTION_SIZE = 192
# Tolerance when checking that accuracy falls with epsilon and that PGD is at
# least as strong as FGSM: one sample's worth plus numerical noise.
TOLERANCE = 1e-6


class SelfCheckError(ValueError):
    """A self-check request that cannot be run (bad arguments, no samples)."""


@dataclass(frozen=True)
class SelfCheckRow:
    attack: str
    epsilon: float
    clean_accuracy: float
    attacked_accuracy: float
    flip_rate: float


@dataclass
class SelfCheckReport:
    model: str
    source: str
    samples: int
    rows: list[SelfCheckRow]
    summary: str = ''
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def labelled_folder_faces(folder: Path, labels: Sequence[str], limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aligned crops, landmarks and label indices from a folder of class sub-folders.

    Images are taken round-robin over the classes the model knows, so a small
    limit still covers every class; images without a detectable face are skipped.
    """
    if not folder.is_dir():
        raise SelfCheckError(f'dataset folder {folder} does not exist')
    per_class = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        try:
            label = canonical_label(class_dir.name)
        except ValueError:
            continue
        if label in labels:
            files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            per_class.append((labels.index(label), files))
    if not per_class:
        raise SelfCheckError(f'{folder} has no class folder matching the model labels {list(labels)}')
    detector = FaceMeshDetector(max_faces=1, video_mode=False)
    crops, landmarks, targets = [], [], []
    try:
        for rank in range(max(len(files) for _, files in per_class)):
            for label_index, files in per_class:
                if rank >= len(files) or len(crops) >= limit:
                    continue
                image = cv2.imread(str(files[rank]), cv2.IMREAD_COLOR)
                if image is None:
                    continue
                scale = max(1.0, DETECTION_SIZE / max(image.shape[:2]))
                image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
                faces = detector.detect(image)
                if faces:
                    crop, points = align_face(image, faces[0].landmarks)
                    crops.append(crop)
                    landmarks.append(points)
                    targets.append(label_index)
            if len(crops) >= limit:
                break
    finally:
        detector.close()
    if not crops:
        raise SelfCheckError(f'no face found in the images of {folder}')
    return np.stack(crops), np.stack(landmarks), np.array(targets)


def _attack(kind: str, model_fn, images, targets, eps: float) -> torch.Tensor:
    if kind == 'fgsm':
        return fgsm(model_fn, images, targets, eps)
    return pgd(model_fn, images, targets, eps, alpha=2.5 * eps / PGD_STEPS, steps=PGD_STEPS)


def _predictions(classifier: ExpressionClassifier, crops, landmarks, attack: str | None = None,
                 eps: float = 0.0, targets: np.ndarray | None = None) -> np.ndarray:
    """Predicted class per sample, optionally after attacking it (batched)."""
    model, device = classifier.model, classifier.device
    predictions = []
    for start in range(0, len(crops), BATCH_SIZE):
        stop = start + BATCH_SIZE
        images = torch.from_numpy(crops[start:stop].astype(np.float32) / 255.0)[:, None].to(device)
        points = (torch.from_numpy(landmarks[start:stop].astype(np.float32)).to(device)
                  if classifier.uses_landmarks else None)

        def model_fn(x, points=points):
            return model(x, points).logits

        if attack is not None:
            images = _attack(attack, model_fn, images, torch.from_numpy(targets[start:stop]).to(device), eps)
        with torch.no_grad():
            predictions.append(model_fn(images).argmax(dim=1).cpu().numpy())
    return np.concatenate(predictions)


def run_self_check(classifier: ExpressionClassifier, source: str, attacks: Sequence[str],
                   epsilons: Sequence[float], samples: int,
                   seen_faces: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None) -> SelfCheckReport:
    """FGSM/PGD at each epsilon (1/255 units) on seen faces ('seen') or a labelled folder."""
    unknown = sorted(set(attacks) - set(ATTACKS))
    if unknown:
        raise SelfCheckError(f'unknown attack(s) {unknown}; known: {list(ATTACKS)}')
    if not epsilons or any(not 0.0 < e <= 255.0 for e in epsilons):
        raise SelfCheckError(f'epsilons must be in (0, 255] (1/255 units), got {list(epsilons)}')
    if samples < 1:
        raise SelfCheckError(f'samples must be >= 1, got {samples}')
    started = time.monotonic()
    if source == 'seen':
        if seen_faces is None:
            raise SelfCheckError('no seen faces available here')
        crops, landmarks = seen_faces()
        crops, landmarks = crops[-samples:], landmarks[-samples:]
        if len(crops) == 0:
            raise SelfCheckError('no face seen yet: send frames with faces first, or give a dataset folder')
        targets = None
    else:
        try:
            crops, landmarks, targets = labelled_folder_faces(Path(source).expanduser(), classifier.labels, samples)
        except OSError as error:  # unreadable, too long a name, permissions
            raise SelfCheckError(f'cannot read dataset folder {source[:200]!r}: {error.strerror or error}') from error

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        clean = _predictions(classifier, crops, landmarks)
        reference = clean if targets is None else targets
        clean_accuracy = float(np.mean(clean == reference))
        rows = []
        for attack in attacks:
            for epsilon in sorted(epsilons):
                attacked = _predictions(classifier, crops, landmarks, attack, epsilon / 255.0, reference)
                rows.append(SelfCheckRow(attack, float(epsilon), clean_accuracy,
                                         float(np.mean(attacked == reference)), float(np.mean(attacked != clean))))

    report = SelfCheckReport(classifier.name, source, len(crops), rows)
    report.warnings = _sanity_warnings(rows)
    metric = 'flip rate' if targets is None else 'accuracy'
    parts = []
    for attack in attacks:
        values = [r.flip_rate if targets is None else r.attacked_accuracy for r in rows if r.attack == attack]
        parts.append(f'{attack} {"/".join(f"{v:.2f}" for v in values)}')
    report.summary = (f'{classifier.name} on {len(crops)} {"seen faces" if targets is None else "labelled faces"}'
                      f'{"" if targets is None else f" (clean accuracy {clean_accuracy:.2f})"}: {metric} at eps '
                      f'{"/".join(f"{e:g}" for e in sorted(epsilons))}/255: {", ".join(parts)}')
    report.seconds = time.monotonic() - started
    return report


def _sanity_warnings(rows: list[SelfCheckRow]) -> list[str]:
    """Attacked accuracy should fall as epsilon grows; PGD should beat FGSM."""
    warnings = []
    by_attack: dict[str, list[SelfCheckRow]] = {}
    for row in rows:
        by_attack.setdefault(row.attack, []).append(row)
    for attack, attack_rows in by_attack.items():
        for smaller, larger in zip(attack_rows, attack_rows[1:]):
            if larger.attacked_accuracy > smaller.attacked_accuracy + TOLERANCE:
                warnings.append(f'{attack}: accuracy rose from {smaller.attacked_accuracy:.3f} at eps '
                                f'{smaller.epsilon:g} to {larger.attacked_accuracy:.3f} at eps {larger.epsilon:g}')
    for fgsm_row, pgd_row in zip(by_attack.get('fgsm', []), by_attack.get('pgd', [])):
        if pgd_row.attacked_accuracy > fgsm_row.attacked_accuracy + TOLERANCE:
            warnings.append(f'PGD weaker than FGSM at eps {pgd_row.epsilon:g} ({pgd_row.attacked_accuracy:.3f} > '
                            f'{fgsm_row.attacked_accuracy:.3f}): a sign of gradient masking')
    return warnings
