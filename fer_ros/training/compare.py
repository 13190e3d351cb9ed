"""``fer-compare``: several checkpoints side by side on one split, in one table.

  fer-compare fer_ros/weights/cnn_se_gcn_fer2013 runs/fer2013_pcnn/best runs/fer2013_efficientnet_b2/best \
      --data ../shared/data/fer2013 --split val --landmark-cache ../cache/landmarks

For each model: accuracy and macro-F1 on the split, parameter count, weights
file size, and CPU latency per face at batch 1 and 32 (forward pass only,
--threads torch threads). ``--ensemble`` adds a row for the mean of all the
models' probabilities (late fusion; its size and latency are the sums).
Writes comparison.json and comparison.md.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from fer_ros.model.checkpoint import checkpoint_paths, load_model
from fer_ros.model.profiling import forward_latency
from fer_ros.training import console_script
from fer_ros.training.evaluate import classification_report, evaluate_checkpoint


def compare(models, data, kind='fer2013', split='val', landmark_cache=None, repeats=20, ensemble=False) -> list[dict]:
    rows, reports = [], []
    for path in models:
        report = evaluate_checkpoint(path, data, kind, split, landmark_cache, device='cpu')
        reports.append(report)
        model, metadata = load_model(path)
        latency = forward_latency(model, (1, 32), repeats)
        rows.append({'model': str(path), 'name': metadata.get('name', Path(path).name),
                     'architecture': metadata['architecture'], 'accuracy': report['accuracy'],
                     'macro_f1': report['macro_f1'], 'parameters': sum(p.numel() for p in model.parameters()),
                     'weights_mb': checkpoint_paths(path)[0].stat().st_size / 1e6,
                     'cpu_ms_per_face_batch1': latency[1]['face_ms_median'],
                     'cpu_ms_per_face_batch32': latency[32]['face_ms_median']})
    if ensemble:
        rows.append(ensemble_row(rows, reports))
    return rows


def ensemble_row(rows, reports) -> dict:
    """The row of the models' mean probabilities (same split, same label order required)."""
    if len({tuple(report['class_names']) for report in reports}) != 1:
        raise ValueError('an ensemble needs models with the same labels in the same order')
    class_names = reports[0]['class_names']
    labels = np.array([class_names.index(row['label']) for row in reports[0]['predictions']])
    mean = sum(report['probabilities'] for report in reports) / len(reports)
    fused = classification_report(mean, labels, class_names)
    summed = {key: sum(row[key] for row in rows) for key in
              ('parameters', 'weights_mb', 'cpu_ms_per_face_batch1', 'cpu_ms_per_face_batch32')}
    return {'model': ' + '.join(row['model'] for row in rows), 'name': 'mean of ' + ' + '.join(r['name'] for r in rows),
            'architecture': 'ensemble', 'accuracy': fused['accuracy'], 'macro_f1': fused['macro_f1'], **summed}


def markdown_table(rows, split, threads) -> str:
    lines = [f'| model | architecture | {split} accuracy | {split} macro-F1 | parameters | weights MB | '
             f'CPU ms/face b1 | CPU ms/face b32 |', '|---|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['name']} | {r['architecture']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | "
                     f"{r['parameters']:,} | {r['weights_mb']:.1f} | {r['cpu_ms_per_face_batch1']:.2f} | "
                     f"{r['cpu_ms_per_face_batch32']:.2f} |")
    return '\n'.join(lines) + f'\n\nCPU latency: forward pass only, {threads} torch threads.\n'


def main(argv=None):
    parser = argparse.ArgumentParser(prog='fer-compare', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('models', nargs='+', help='checkpoints (dir, stem, .safetensors or .json)')
    parser.add_argument('--data', required=True)
    parser.add_argument('--kind', default='fer2013', choices=['fer2013', 'fer2013_csv', 'ckplus', 'folder'])
    parser.add_argument('--split', default='val')
    parser.add_argument('--landmark-cache')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--ensemble', action='store_true', help='add the mean of all models as a row')
    parser.add_argument('--output', type=Path, default=Path('reports/compare'))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        rows = compare(args.models, args.data, args.kind, args.split, args.landmark_cache, args.repeats,
                       args.ensemble)
    except ValueError as error:
        raise SystemExit(f'fer-compare: {error}') from None
    table = markdown_table(rows, args.split, args.threads)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / 'comparison.json').write_text(json.dumps(rows, indent=2))
    (args.output / 'comparison.md').write_text(table)
    print(table)
    return rows


cli = console_script(main)


if __name__ == '__main__':
    main()
