"""``fer-fused-kfold``: CK+ k-fold accuracy of the fused model from two finished ``fer-kfold`` runs.

  fer-fused-kfold runs/ckplus_pixel runs/ckplus_tuned --data ../shared/data/ckplus48 \\
      --landmark-cache ../cache/landmarks

Fold k of the fused model averages the probabilities of fold k's pixel model
and fold k's face-mesh model (both trained on the other folds, with the
folds of the same seed) on fold k's held-out subjects, as
:class:`fer_ros.model.fused.FusedCNNSEGCN` does. The split (seed, fold count)
is the runs' own, from their ``kfold_report.json``; runs whose folds held out
other subjects than it are refused, not scored on faces they trained on.
Reported as ``fer-kfold`` does: each run's best epoch per fold and its last
epoch (no choice on the held-out fold). The best epoch is chosen on the
held-out fold (the usual CK+ protocol; optimistic) or, for runs trained with
``kfold_validation: rotating``, on the next fold, left out of training (no
choice on the held-out fold either); both runs must have chosen the same way.
``--mirror-average`` scores every model on each face and its mirror image, as
the emotion node's ``mirror_average`` parameter does. Writes
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


def run_report(run) -> dict:
    """A fer-kfold run's ``kfold_report.json`` ({} for a run without one)."""
    report = Path(run) / 'kfold_report.json'
    return json.loads(report.read_text()) if report.is_file() else {}


def common_setting(reports, key, default, refusal):
    """The value of ``key`` the reports share (``default`` where none records it); ValueError if they differ."""
    values = {report[key] for report in reports if key in report}
    if len(values) > 1:
        raise ValueError(f'{refusal} ({sorted(values)})')
    return values.pop() if values else default


def check_held_out_subjects(run, report, folds, subjects):
    """Refuse a run whose folds held out other subjects than ``folds`` (another seed or fold count)."""
    for row, (_, test_indices) in zip(report.get('folds', []), folds):
        expected = sorted(str(subject) for subject in set(subjects[test_indices]))
        if 'test_subjects' in row and row['test_subjects'] != expected:
            raise ValueError(f'{run} fold {row["fold"]} held out other subjects than this split: '
                             'score it with the seed and fold count it was trained with')


def fused_kfold(pixel_run, mesh_run, data, landmark_cache, num_folds=None, seed=None, pixel_weight=0.5,
                mirror_average=False) -> dict:
    """Per-fold and mean/std accuracy of the fused folds, best and last epochs. ``seed`` and ``num_folds``
    default to the runs' (their kfold_report.json; 0 and 10 for runs without one)."""
    runs = (pixel_run, mesh_run)
    reports = [run_report(run) for run in runs]
    validation = common_setting([{'validation': 'held_out', **report} for report in reports], 'validation', None,
                                'the runs chose their checkpoints differently: train both with the same '
                                'kfold_validation')
    if seed is None:
        seed = common_setting(reports, 'seed', 0, 'the runs were split with different seeds')
    if num_folds is None:
        num_folds = common_setting(reports, 'num_folds', 10, 'the runs have different fold counts')
    samples = load_samples('ckplus', data)
    cache = LandmarkCache(landmark_cache)
    cache.extract(samples.images)
    folds = subject_kfold(samples.subjects, samples.labels, num_folds, seed)
    for run, report in zip(runs, reports):
        check_held_out_subjects(run, report, folds, samples.subjects)
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
            'mirror_average': mirror_average, 'validation': validation, 'seed': seed, 'num_folds': num_folds,
            'folds': rows,
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
    parser.add_argument('--num-folds', type=int, help="the runs' fold count (default: their kfold_report.json)")
    parser.add_argument('--seed', type=int, help="the seed both runs split with (default: their kfold_report.json)")
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
