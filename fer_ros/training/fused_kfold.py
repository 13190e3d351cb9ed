"""``fer-fused-kfold``: CK+ k-fold accuracy of the fused model from two finished ``fer-kfold`` runs.

  fer-fused-kfold runs/ckplus_pixel runs/ckplus_tuned --data ../shared/data/ckplus48 \\
      --landmark-cache ../cache/landmarks

Fold k of the fused model averages the probabilities of fold k's pixel model
and fold k's face-mesh model (both trained on the other folds, with the
folds of the same seed) on fold k's held-out subjects, as
:class:`fer_ros.model.fused.FusedCNNSEGCN` does. Reported as ``fer-kfold``
does: each run's best epoch per fold and its last epoch (no choice on the
held-out fold). The best epoch is chosen on the held-out fold (the usual CK+
protocol; optimistic) or, for runs trained with ``kfold_validation: rotating``,
on the next fold, left out of training (no choice on the held-out fold
either); both runs must have chosen the same way. ``--mirror-average``
scores every model on each face and its mirror image, as the emotion node's
``mirror_average`` parameter does. Writes
``fused_kfold_report.json`` (``fused_kfold_mirror_average_report.json``) into
the pixel run's folder.
"""
import argparse
import json
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from fer_ros.data.datasets import FaceDataset, load_samples, prepare_faces
from fer_ros.data.landmarks import LandmarkCache
from fer_ros.data.splits import subject_kfold
from fer_ros.training import console_script
from fer_ros.training.evaluate import classification_report, predict_loader
from fer_ros.training.kfold import fold_model

SELECTION = {
    'held_out': 'best_*: best epoch per fold chosen on its held-out fold (optimistic); last_*: last epoch',
    'rotating': 'best_*: epoch chosen on the next fold, left out of training; last_*: last epoch',
}


def run_validation(run) -> str:
    """Where a fer-kfold run chose its checkpoints (``kfold_validation`` in its report; held_out without one)."""
    report = Path(run) / 'kfold_report.json'
    return json.loads(report.read_text()).get('validation', 'held_out') if report.is_file() else 'held_out'


def fused_kfold(pixel_run, mesh_run, data, landmark_cache, num_folds=10, seed=0, pixel_weight=0.5,
                mirror_average=False) -> dict:
    """Per-fold and mean/std accuracy of the fused folds, best and last epochs."""
    validations = {run_validation(run) for run in (pixel_run, mesh_run)}
    if len(validations) > 1:
        raise ValueError(f'the runs chose their checkpoints differently ({sorted(validations)}): '
                         'train both with the same kfold_validation')
    validation = validations.pop()
    samples = load_samples('ckplus', data)
    cache = LandmarkCache(landmark_cache)
    cache.extract(samples.images)
    folds = subject_kfold(samples.subjects, samples.labels, num_folds, seed)
    rows = []
    for fold, (_, test_indices) in enumerate(folds):
        faces = prepare_faces(samples.subset(test_indices), cache)
        loader = DataLoader(FaceDataset(faces), batch_size=256)
        row = {'fold': fold, 'faces': int(len(test_indices))}
        for epoch in ('best', 'last'):
            pixel, mesh = (predict_loader(fold_model(Path(run) / f'fold_{fold}', epoch), loader, 'cpu',
                                          mirror_average)[0]
                           for run in (pixel_run, mesh_run))
            for name, fused in (('pixel', pixel), ('mesh', mesh),
                                ('fused', pixel_weight * pixel + (1.0 - pixel_weight) * mesh)):
                report = classification_report(fused, faces.labels, samples.class_names)
                row[f'{epoch}_{name}_accuracy'] = report['accuracy']
                row[f'{epoch}_{name}_macro_f1'] = report['macro_f1']
        rows.append(row)
        print(json.dumps(row), flush=True)
    keys = [key for key in rows[0] if key.endswith(('accuracy', 'macro_f1'))]
    return {'pixel_run': str(pixel_run), 'mesh_run': str(mesh_run), 'pixel_weight': pixel_weight,
            'mirror_average': mirror_average, 'validation': validation, 'folds': rows,
            'mean': {key: float(np.mean([row[key] for row in rows])) for key in keys},
            'std': {key: float(np.std([row[key] for row in rows])) for key in keys},
            'selection': SELECTION[validation]}


def main(argv=None):
    parser = argparse.ArgumentParser(prog='fer-fused-kfold', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('pixel_run', help='fer-kfold output folder of the pixel model')
    parser.add_argument('mesh_run', help='fer-kfold output folder of the face-mesh model')
    parser.add_argument('--data', required=True, help='CK+48 folder')
    parser.add_argument('--landmark-cache', required=True)
    parser.add_argument('--num-folds', type=int, default=10)
    parser.add_argument('--seed', type=int, default=0, help='the seed both fer-kfold runs split with')
    parser.add_argument('--pixel-weight', type=float, default=0.5)
    parser.add_argument('--mirror-average', action='store_true',
                        help='score the mean over each face and its mirror image')
    args = parser.parse_args(argv)
    summary = fused_kfold(args.pixel_run, args.mesh_run, args.data, args.landmark_cache, args.num_folds, args.seed,
                          args.pixel_weight, args.mirror_average)
    report = 'fused_kfold_mirror_average_report.json' if args.mirror_average else 'fused_kfold_report.json'
    (Path(args.pixel_run) / report).write_text(json.dumps(summary, indent=2))
    for key in summary['mean']:
        print(f"{key}: {summary['mean'][key]:.4f} +- {summary['std'][key]:.4f}")
    return summary


cli = console_script(main)

if __name__ == '__main__':
    main()
