"""``fer-eval``: accuracy, macro-F1, per-class P/R/F1, one-vs-rest AUC, confusion matrix PNG, JSON report."""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score
from torch.utils.data import DataLoader

from fer_ros.data.datasets import FaceDataset, load_samples, prepare_faces
from fer_ros.data.landmarks import LandmarkCache
from fer_ros.model.checkpoint import load_model
from fer_ros.model.inference import resolve_device
from fer_ros.training import console_script


@torch.no_grad()
def predict_loader(model, loader, device):
    """(softmax probabilities [N, C], labels [N]) of a loader of FaceDataset batches."""
    model.eval()
    probabilities, labels = [], []
    for batch in loader:
        landmarks = batch['landmarks'].to(device) if model.uses_landmarks else None
        logits = model(batch['image'].to(device), landmarks).logits
        probabilities.append(torch.softmax(logits.float(), dim=1).cpu())
        labels.append(batch['label'])
    return torch.cat(probabilities).numpy(), torch.cat(labels).numpy()


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


def evaluate_checkpoint(model_path, data, kind='fer2013', split='val', landmark_cache=None, device='auto',
                        batch_size=256) -> dict:
    """Classification report of a checkpoint on a dataset split (ValueError for a mismatch)."""
    device = resolve_device(device)
    model, metadata = load_model(model_path, device)
    samples = load_samples(kind, data, split)
    if tuple(samples.class_names) != tuple(metadata['labels']):
        raise ValueError(f'dataset classes {samples.class_names} differ from model labels {metadata["labels"]}')
    cache = None
    if landmark_cache:
        cache = LandmarkCache(landmark_cache)
        cache.extract(samples.images)
    elif model.uses_landmarks:
        raise ValueError('this model uses landmarks: give a landmark cache (--landmark-cache)')
    loader = DataLoader(FaceDataset(prepare_faces(samples, cache, model.config.input_size)), batch_size=batch_size)
    report = classification_report(*predict_loader(model, loader, device), samples.class_names)
    report.update({'model': str(model_path), 'data': str(data), 'split': split,
                   'class_names': list(samples.class_names)})
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(prog='fer-eval', description=__doc__)
    parser.add_argument('model', help='checkpoint (dir, stem, .safetensors or .json)')
    parser.add_argument('data', help='dataset folder or fer2013.csv')
    parser.add_argument('--kind', default='fer2013', choices=['fer2013', 'fer2013_csv', 'ckplus', 'folder'])
    parser.add_argument('--split', default='val', help='fer2013: sub-folder; fer2013_csv: train/val/test or Usage')
    parser.add_argument('--landmark-cache', help='LandmarkCache dir (missing landmarks are extracted)')
    parser.add_argument('--output', default='reports/eval', help='folder for report.json and confusion_matrix.png')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--batch-size', type=int, default=256)
    args = parser.parse_args(argv)
    try:
        report = evaluate_checkpoint(args.model, args.data, args.kind, args.split, args.landmark_cache, args.device,
                                     args.batch_size)
    except ValueError as error:
        raise SystemExit(f'fer-eval: {error}') from None
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / 'report.json').write_text(json.dumps(report, indent=2))
    plot_confusion_matrix(report['confusion_matrix'], report['class_names'], output / 'confusion_matrix.png',
                          f'{Path(args.model).name} on {Path(args.data).name}/{args.split}')
    print(f'accuracy {report["accuracy"]:.4f}  macro-F1 {report["macro_f1"]:.4f}  -> {output}/report.json')
    return report


cli = console_script(main)


if __name__ == '__main__':
    main()
