"""``fer-kfold``: subject-independent k-fold training on CK+, mean/std over folds.

Each fold trains with :mod:`fer_ros.training.train` into ``<output_dir>/fold_<k>``
with the held-out subjects as its validation split (CK+ has no separate
validation set). The report gives both the best epoch per fold, chosen on the
test fold as is usual for CK+ protocols (optimistic), and the last epoch,
which involves no choice on the test fold.
"""
import argparse
import json
from pathlib import Path

import numpy as np

from fer_ros.data.datasets import load_samples
from fer_ros.data.splits import subject_kfold
from fer_ros.model.checkpoint import last_logged_metrics
from fer_ros.training import console_script
from fer_ros.training.train import load_config, train


def run_kfold(config, resume=False):
    """Train every fold; returns {'folds': [...], 'mean': {...}, 'std': {...}}."""
    data = config['data']
    samples = load_samples(data['kind'], data['path'])
    if samples.subjects is None:
        raise ValueError('k-fold needs subject ids (data.kind: ckplus)')
    folds = subject_kfold(samples.subjects, samples.labels, config.get('num_folds', 10), config.get('seed', 0))
    output_dir = Path(config['output_dir'])
    results = []
    for fold, (train_indices, test_indices) in enumerate(folds):
        fold_config = {**config, 'output_dir': str(output_dir / f'fold_{fold}'), 'name': f'{config.get("name")}_fold{fold}',
                       'data': {**data, 'train_samples': samples.subset(train_indices),
                                'val_samples': samples.subset(test_indices)}}
        best = train(fold_config, resume=resume)
        results.append({'fold': fold, 'test_subjects': sorted(set(samples.subjects[test_indices])), **best,
                        **{f'last_{key}': value
                           for key, value in last_logged_metrics(output_dir / f'fold_{fold}').items()}})
    metrics = [key for key in results[0] if key.startswith(('val_', 'last_val_'))]
    summary = {'folds': results,
               'selection': 'val_*: best epoch per fold chosen on its held-out fold; last_val_*: last epoch',
               'mean': {key: float(np.mean([r[key] for r in results])) for key in metrics},
               'std': {key: float(np.std([r[key] for r in results])) for key in metrics}}
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / 'kfold_report.json').write_text(json.dumps(summary, indent=2))
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(prog='fer-kfold', description=__doc__)
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
