"""``fer-eval``: accuracy, macro-F1, per-class P/R/F1, one-vs-rest AUC, confusion matrix PNG, JSON report.

Two protocols:

* ``crops`` (default, the dataset protocol of training and of published
  figures): each dataset crop aligned on its cached landmarks, every image
  scored (no face found: the crop resized, template landmarks).
* ``frames`` (fer_ros as deployed): each image placed in a camera frame exactly
  as ``fer-make-bag folder`` places it (optionally JPEG round-tripped as in a
  ``--compressed`` bag), then the node's pipeline: face detection, landmarks,
  alignment, classification; the largest face is scored, images without a
  face are counted apart. ``fer-bag-eval`` offline on a bag made from the same
  folder with the same frame options gives the same predictions.

Both write report.json, predictions.csv (one row per image) and confusion_matrix.png.
With ``--attack-epsilon`` the crops protocol also reports accuracy under FGSM
and PGD-10 (step epsilon / 4, random start) in pixel space, on
``--attack-samples`` images (a fixed random subset). ``--mirror-average``
scores the mean over each face and its mirror image, as the emotion node does
with its ``mirror_average`` parameter.
"""
import argparse
import csv
import json
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from fer_ros.data.datasets import FaceDataset, load_samples, prepare_faces
from fer_ros.data.landmarks import LandmarkCache
from fer_ros.model.attacks import fgsm, pgd
from fer_ros.model.checkpoint import load_model
from fer_ros.model.inference import ExpressionClassifier, resolve_device
from fer_ros.pipeline import EmotionPipeline, PipelineSettings, largest_face
from fer_ros.training import console_script
from fer_ros.vision.framing import as_bgr, place_face
from fer_ros.vision.image_codec import bgr_to_compressed, compressed_to_bgr
from fer_ros.vision.mirror import hflip_landmarks, mirror_averaged

PROTOCOLS = ('crops', 'frames')


@torch.no_grad()
def predict_loader(model, loader, device, mirror_average=False):
    """(softmax probabilities [N, C], labels [N]) of a loader of FaceDataset batches; ``mirror_average``:
    the mean of each face's probabilities and its mirror image's (as :func:`mirror_averaged`)."""
    model.eval()

    def probabilities_of(images, landmarks):
        landmarks = torch.as_tensor(landmarks).to(device) if model.uses_landmarks else None
        return torch.softmax(model(images.to(device), landmarks).logits.float(), dim=1).cpu()

    probabilities, labels = [], []
    for batch in loader:
        images, landmarks = batch['image'], batch['landmarks']
        batch_probabilities = probabilities_of(images, landmarks)
        if mirror_average:
            mirrored = probabilities_of(images.flip(-1), hflip_landmarks(landmarks.numpy(), images.shape[-1]))
            batch_probabilities = (batch_probabilities + mirrored) / 2
        probabilities.append(batch_probabilities)
        labels.append(batch['label'])
    return torch.cat(probabilities).numpy(), torch.cat(labels).numpy()


PGD_STEPS = 10


def attacked_accuracy(model, loader, device, epsilon, pgd_steps=PGD_STEPS):
    """{'clean', 'fgsm', 'pgd'}: accuracy on a loader of FaceDataset batches, clean and under L-inf attacks
    of ``epsilon`` (pixels in [0, 1]) against the true labels."""
    model.eval()
    correct = {'clean': 0, 'fgsm': 0, 'pgd': 0}
    total = 0
    for batch in loader:
        images, labels = batch['image'].to(device), batch['label'].to(device)
        landmarks = batch['landmarks'].to(device) if model.uses_landmarks else None

        def logits(x):
            return model(x, landmarks).logits
        attacked = {'clean': images, 'fgsm': fgsm(logits, images, labels, epsilon),
                    'pgd': pgd(logits, images, labels, epsilon, alpha=epsilon / 4, steps=pgd_steps)}
        with torch.no_grad():
            for name, inputs in attacked.items():
                correct[name] += int((logits(inputs).argmax(dim=1) == labels).sum())
        total += len(labels)
    return {name: count / max(total, 1) for name, count in correct.items()}


def classification_report(probabilities, labels, class_names):
    """Accuracy, macro-F1, per-class precision/recall/F1/support, OvR AUC and the confusion matrix."""
    predictions = probabilities.argmax(axis=1)
    classes = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, labels=classes,
                                                                     zero_division=0)
    auc = {}
    for index, name in enumerate(class_names):
        positives = labels == index
        auc[name] = float(roc_auc_score(positives, probabilities[:, index])) if 0 < positives.sum() < len(labels) \
            else None
    return {
        'num_samples': int(len(labels)),
        'accuracy': float((predictions == labels).mean()),
        'macro_f1': float(f1[support > 0].mean()) if (support > 0).any() else 0.0,
        'per_class': {name: {'precision': float(precision[i]), 'recall': float(recall[i]), 'f1': float(f1[i]),
                             'support': int(support[i]), 'auc_ovr': auc[name]}
                      for i, name in enumerate(class_names)},
        'confusion_matrix': confusion_matrix(labels, predictions, labels=classes).tolist(),
    }


def plot_confusion_matrix(matrix, class_names, path, title=''):
    """Row-normalised confusion matrix with counts, saved as PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    matrix = np.asarray(matrix)
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(7, 6))
    image = axes.imshow(normalised, cmap='Blues', vmin=0, vmax=1)
    axes.set_xticks(range(len(class_names)), class_names, rotation=45, ha='right')
    axes.set_yticks(range(len(class_names)), class_names)
    axes.set_xlabel('predicted')
    axes.set_ylabel('true')
    axes.set_title(title)
    for row in range(len(class_names)):
        for col in range(len(class_names)):
            axes.text(col, row, f'{normalised[row, col]:.2f}\n{matrix[row, col]}', ha='center', va='center',
                      fontsize=7, color='white' if normalised[row, col] > 0.5 else 'black')
    figure.colorbar(image)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def image_name(item, index: int) -> str:
    return str(item) if isinstance(item, (str, Path)) else f'#{index}'


def prediction_rows(samples, probabilities, found=None) -> list[dict]:
    """One row per image: image, label, predicted ('' without a face), confidence."""
    names = samples.class_names
    rows = []
    for index, (item, label) in enumerate(zip(samples.images, samples.labels)):
        scored = found is None or found[index]
        rows.append({'image': image_name(item, index), 'label': names[label],
                     'predicted': names[int(np.argmax(probabilities[index]))] if scored else '',
                     'confidence': round(float(np.max(probabilities[index])), 6) if scored else ''})
    return rows


def evaluate_checkpoint(model_path, data, kind='fer2013', split='val', landmark_cache=None, device='auto',
                        batch_size=256, attack_epsilon=None, attack_samples=1000, compiled=False,
                        mirror_average=False) -> dict:
    """Crops protocol: the classification report of a checkpoint on a dataset split, with per-image
    ``predictions`` (ValueError for a mismatch); with ``attack_epsilon`` (1/255 units) also the
    accuracy under FGSM and PGD-10 on ``attack_samples`` images. ``compiled``: score through the
    runtime the node uses on a CPU (:class:`~fer_ros.model.compiled.CompiledClassifier`).
    ``mirror_average``: score the mean over each face and its mirror image (the node's parameter)."""
    if compiled and attack_epsilon:
        raise ValueError('attacks need gradients: run them without --compiled')
    if mirror_average and attack_epsilon:
        raise ValueError('attacks are measured on the model alone: run them without --mirror-average')
    device = resolve_device(device)
    model, metadata = load_model(model_path, device)
    samples = load_samples(kind, data, split, metadata['labels'])
    if tuple(samples.class_names) != tuple(metadata['labels']):
        raise ValueError(f'dataset classes {samples.class_names} differ from model labels {metadata["labels"]}')
    cache = None
    if landmark_cache:
        cache = LandmarkCache(landmark_cache)
        cache.extract(samples.images)
    elif model.uses_landmarks:
        raise ValueError('this model uses landmarks: give a landmark cache (--landmark-cache)')
    faces = prepare_faces(samples, cache, model.config.input_size)
    dataset = FaceDataset(faces)
    if compiled:
        from fer_ros.model.compiled import CompiledClassifier
        classifier = CompiledClassifier(model_path, num_threads=torch.get_num_threads())
        predict = partial(mirror_averaged, classifier.predict) if mirror_average else classifier.predict
        probabilities = np.concatenate([predict(faces.images[start:start + batch_size],
                                                faces.landmarks[start:start + batch_size])
                                        for start in range(0, len(dataset), batch_size)])
        labels = faces.labels
    else:
        probabilities, labels = predict_loader(model, DataLoader(dataset, batch_size=batch_size), device,
                                               mirror_average)
    report = classification_report(probabilities, labels, samples.class_names)
    report.update({'protocol': 'crops', 'runtime': 'compiled' if compiled else 'pytorch',
                   'mirror_average': mirror_average, 'model': str(model_path),
                   'data': str(data), 'split': split, 'class_names': list(samples.class_names),
                   'predictions': prediction_rows(samples, probabilities), 'probabilities': probabilities})
    if attack_epsilon:
        subset = np.sort(np.random.default_rng(0).permutation(len(dataset))[:attack_samples])
        attack_loader = DataLoader(Subset(dataset, subset), batch_size=min(batch_size, 64))
        report['attacks'] = {'epsilon_255': attack_epsilon, 'samples': int(len(subset)), 'pgd_steps': PGD_STEPS,
                             'accuracy': attacked_accuracy(model, attack_loader, device, attack_epsilon / 255)}
    return report


def read_bgr(item) -> np.ndarray:
    """A dataset image as BGR, read the way fer-make-bag reads it."""
    if not isinstance(item, (str, Path)):
        return as_bgr(item)
    image = cv2.imread(str(item), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f'cannot read image {item}')
    return image


def evaluate_in_frames(model_path, data, kind='fer2013', split='val', *, frame_size=(640, 480), face_size=240,
                       background=None, jpeg=False, device='auto', landmark_backend='mediapipe',
                       mirror_average=False, progress=False) -> dict:
    """Frames protocol (see the module docstring): the classification report on the images whose frame
    had a face, the count of those without, and per-image ``predictions``; ``mirror_average`` as the
    node's parameter."""
    classifier = ExpressionClassifier(model_path, device)
    samples = load_samples(kind, data, split, classifier.labels)
    if tuple(samples.class_names) != tuple(classifier.labels):
        raise ValueError(f'dataset classes {samples.class_names} differ from model labels {classifier.labels}')
    pipeline = EmotionPipeline(classifier, PipelineSettings(video_mode=False, landmark_backend=landmark_backend,
                                                            landmark_device=str(classifier.device),
                                                            mirror_average=mirror_average))
    probabilities = np.zeros((len(samples), len(samples.class_names)), np.float32)
    found = np.zeros(len(samples), bool)
    try:
        for index, item in enumerate(tqdm(samples.images, desc='frames', unit='image', disable=not progress)):
            frame = place_face(read_bgr(item), frame_size, face_size, background)
            if jpeg:
                frame = compressed_to_bgr('jpeg', bgr_to_compressed(frame, 'jpeg'))
            faces = pipeline.process(frame)
            if faces:
                probabilities[index], found[index] = largest_face(faces).probabilities, True
    finally:
        pipeline.close()
    if not found.any():
        raise ValueError(f'no face found in any of the {len(samples)} frames (try another --face-size)')
    report = classification_report(probabilities[found], samples.labels[found], samples.class_names)
    report.update({'protocol': 'frames', 'model': str(model_path), 'data': str(data), 'split': split,
                   'class_names': list(samples.class_names), 'num_images': int(len(samples)),
                   'faces_found': int(found.sum()), 'no_face': int((~found).sum()),
                   'frame': {'size': list(frame_size), 'face_size': face_size, 'background': background,
                             'jpeg': jpeg, 'landmark_backend': landmark_backend},
                   'mirror_average': mirror_average,
                   'predictions': prediction_rows(samples, probabilities, found)})
    return report


def write_predictions(rows: list[dict], path: Path) -> None:
    with open(path, 'w', newline='') as stream:
        writer = csv.DictWriter(stream, fieldnames=['image', 'label', 'predicted', 'confidence'])
        writer.writeheader()
        writer.writerows(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='fer-eval', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('model', help='checkpoint (dir, stem, .safetensors or .json)')
    parser.add_argument('data', help='dataset folder or fer2013.csv')
    parser.add_argument('--kind', default='fer2013', choices=['fer2013', 'fer2013_csv', 'ckplus', 'folder'])
    parser.add_argument('--split', default='val', help='fer2013: sub-folder; fer2013_csv: train/val/test or Usage')
    parser.add_argument('--protocol', choices=PROTOCOLS, default='crops')
    parser.add_argument('--landmark-cache', help='crops: LandmarkCache dir (missing landmarks are extracted)')
    frames = parser.add_argument_group('frames protocol (the fer-make-bag folder options)')
    frames.add_argument('--size', type=int, nargs=2, default=[640, 480], metavar=('WIDTH', 'HEIGHT'))
    frames.add_argument('--face-size', type=int, default=240)
    frames.add_argument('--background', type=int, default=None)
    frames.add_argument('--jpeg', action='store_true', help='JPEG round trip, as in a --compressed bag')
    frames.add_argument('--landmark-backend', choices=['mediapipe', 'torch'], default='mediapipe')
    parser.add_argument('--output', default='reports/eval',
                        help='folder for report.json, predictions.csv and confusion_matrix.png')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--attack-epsilon', type=float, metavar='EPS',
                        help='crops: also accuracy under FGSM and PGD-10 at EPS/255 (pixel space)')
    parser.add_argument('--attack-samples', type=int, default=1000, help='images attacked (a fixed random subset)')
    parser.add_argument('--compiled', action='store_true',
                        help='crops: score through the runtime the node uses on a CPU (LiteRT + ONNX Runtime; '
                             'face-mesh and fused models)')
    parser.add_argument('--mirror-average', action='store_true',
                        help="score the mean of each face's probabilities and its mirror image's "
                             "(the emotion node's mirror_average parameter)")
    args = parser.parse_args(argv)
    try:
        if args.protocol == 'frames':
            report = evaluate_in_frames(args.model, args.data, args.kind, args.split, frame_size=tuple(args.size),
                                        face_size=args.face_size, background=args.background, jpeg=args.jpeg,
                                        device=args.device, landmark_backend=args.landmark_backend,
                                        mirror_average=args.mirror_average, progress=True)
        else:
            report = evaluate_checkpoint(args.model, args.data, args.kind, args.split, args.landmark_cache,
                                         args.device, args.batch_size, args.attack_epsilon, args.attack_samples,
                                         args.compiled, args.mirror_average)
    except ValueError as error:
        raise SystemExit(f'fer-eval: {error}') from None
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    write_predictions(report.pop('predictions'), output / 'predictions.csv')
    report.pop('probabilities', None)
    (output / 'report.json').write_text(json.dumps(report, indent=2))
    plot_confusion_matrix(report['confusion_matrix'], report['class_names'], output / 'confusion_matrix.png',
                          f'{Path(args.model).name} on {Path(args.data).name}/{args.split} ({args.protocol})')
    found = f'  faces found in {report["faces_found"]}/{report["num_images"]}' if args.protocol == 'frames' else ''
    print(f'accuracy {report["accuracy"]:.4f}  macro-F1 {report["macro_f1"]:.4f}{found}  -> {output}/report.json')
    if 'attacks' in report:
        attacks = report['attacks']
        print(f'on {attacks["samples"]} images at {attacks["epsilon_255"]:g}/255: '
              + '  '.join(f'{name} {value:.4f}' for name, value in attacks['accuracy'].items()))
    return report


cli = console_script(main)


if __name__ == '__main__':
    main()
