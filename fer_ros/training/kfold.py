"""``fer-kfold``: subject-independent k-fold training on CK+, mean/std over folds.

Each fold trains with :mod:`fer_ros.training.train` into ``<output_dir>/fold_<k>``.
CK+ has no validation set; ``kfold_validation`` says where each fold's
checkpoint is chosen:

- ``held_out`` (default): on the test fold itself, as is usual for CK+
  protocols. The report gives the best epoch per fold (``val_*``, chosen on
  the test fold: optimistic) and the last epoch (``last_val_*``, no choice).
- ``rotating``: on the next fold's subjects (fold k+1; the last fold takes
  the first), which are left out of training too: with 10 folds each fold
  trains on 8. The test fold is scored once, after training: ``test_*`` with
  the checkpoint chosen on the validation fold, ``last_test_*`` with the last
  epoch; ``val_*`` are the validation fold's figures.
"""
import argparse
import json
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from fer_ros.data.datasets import FaceDataset, load_samples, prepare_faces
from fer_ros.data.landmarks import LandmarkCache
from fer_ros.data.splits import subject_kfold
from fer_ros.model.checkpoint import last_logged_metrics, load_last_epoch, load_model
from fer_ros.training import console_script
from fer_ros.training.evaluate import classification_report, predict_loader
from fer_ros.training.train import load_config, model_config_of, train

SELECTION = {
    'held_out': 'val_*: best epoch per fold chosen on its held-out fold (optimistic); last_val_*: last epoch',
    'rotating': 'test_*: held-out fold scored with the epoch chosen on the next fold (left out of training); '
                'last_test_*: last epoch; val_*: the validation fold',
}


def fold_split(folds, fold, validation):
    """(train, validation, test) indices of fold ``fold`` under ``kfold_validation`` ``validation``."""
    if validation not in SELECTION:
        raise ValueError(f'kfold_validation must be one of {sorted(SELECTION)}, not {validation!r}')
    if validation == 'rotating' and len(folds) < 3:
        raise ValueError('kfold_validation: rotating needs at least 3 folds (test, validation, training)')
    train_indices, test_indices = folds[fold]
    if validation == 'held_out':
        return train_indices, test_indices, test_indices
    val_indices = folds[(fold + 1) % len(folds)][1]
    return np.setdiff1d(train_indices, val_indices), val_indices, test_indices


def fold_model(fold_dir: Path, epoch: str):
    """A fold's model: ``best`` (best.safetensors) or ``last`` (the weights of last.pt)."""
    if epoch == 'best':
        return load_model(fold_dir / 'best')[0]
    return load_last_epoch(fold_dir)[0]


def held_out_scores(fold_dir: Path, faces) -> dict:
    """Accuracy and macro-F1 of a finished fold's chosen (``test_*``) and last (``last_test_*``) epochs on faces."""
    loader = DataLoader(FaceDataset(faces), batch_size=256)
    scores = {}
    for epoch, prefix in (('best', 'test_'), ('last', 'last_test_')):
        report = classification_report(predict_loader(fold_model(fold_dir, epoch), loader, 'cpu')[0],
                                       faces.labels, faces.class_names)
        scores[f'{prefix}accuracy'], scores[f'{prefix}macro_f1'] = report['accuracy'], report['macro_f1']
    return scores


def run_kfold(config, resume=False):
    """Train every fold; returns {'folds': [...], 'mean': {...}, 'std': {...}}."""
    data = config['data']
    validation = config.get('kfold_validation', 'held_out')
    samples = load_samples(data['kind'], data['path'])
    if samples.subjects is None:
        raise ValueError('k-fold needs subject ids (data.kind: ckplus)')
    folds = subject_kfold(samples.subjects, samples.labels, config.get('num_folds', 10), config.get('seed', 0))
    output_dir = Path(config['output_dir'])
    results = []
    for fold in range(len(folds)):
        train_indices, val_indices, test_indices = fold_split(folds, fold, validation)
        fold_dir = output_dir / f'fold_{fold}'
        fold_config = {**config, 'output_dir': str(fold_dir), 'name': f'{config.get("name")}_fold{fold}',
                       'data': {**data, 'train_samples': samples.subset(train_indices),
                                'val_samples': samples.subset(val_indices)}}
        best = train(fold_config, resume=resume)
        result = {'fold': fold, 'test_subjects': sorted(set(samples.subjects[test_indices])), **best,
                  **{f'last_{key}': value for key, value in last_logged_metrics(fold_dir).items()}}
        if validation == 'rotating':
            result['val_subjects'] = sorted(set(samples.subjects[val_indices]))
            test_samples = samples.subset(test_indices)
            cache = LandmarkCache(data['landmark_cache']) if data.get('landmark_cache') else None
            if cache is not None:
                cache.extract(test_samples.images)
            faces = prepare_faces(test_samples, cache, model_config_of(config, 1)[0].input_size)
            result.update(held_out_scores(fold_dir, faces))
        results.append(result)
    metrics = [key for key in results[0] if key.startswith(('val_', 'last_val_', 'test_', 'last_test_'))
               and not key.endswith('_subjects')]
    summary = {'folds': results, 'seed': config.get('seed', 0), 'num_folds': len(folds),
               'validation': validation, 'selection': SELECTION[validation],
               'mean': {key: float(np.mean([r[key] for r in results])) for key in metrics},
               'std': {key: float(np.std([r[key] for r in results])) for key in metrics}}
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / 'kfold_report.json').write_text(json.dumps(summary, indent=2))
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(prog='fer-kfold', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', required=True, help='YAML config (see config/train_ckplus.yaml)')
    parser.add_argument('--resume', action='store_true')
    parser.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE')
    args = parser.parse_args(argv)
    summary = run_kfold(load_config(args.config, args.overrides), resume=args.resume)
    for key, mean in summary['mean'].items():
        print(f'{key}: {mean:.4f} +- {summary["std"][key]:.4f}')
    return summary


cli = console_script(main)


if __name__ == '__main__':
    main()
