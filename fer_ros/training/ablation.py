"""``fer-ablation``: the CNN-SE-GCN ablation series, one training per variant, one table.

  fer-ablation --config config/train_fer2013.yaml --output runs/ablation
  fer-ablation --config config/train_fer2013.yaml --set train.epochs=3 --set data.max_per_class=300

Variants add one component at a time: CNN only, + SE, + GCN, + the landmark
head with the MSE geometric constraint, + the adversarial discriminator loss,
+ FGSM samples. Every variant gets the same config otherwise (the --set
overrides apply to all), and is selected on the validation split. Writes
ablation.json and ablation.md into the output folder; finished variants are
skipped when the command is run again (resume).
"""

import argparse
import json
from pathlib import Path

from fer_ros.model.checkpoint import load_model
from fer_ros.training import console_script
from fer_ros.training.train import load_config, train

NO_LOSS_TERMS = 'loss.weights={focal: 1.0, geometry: 0, adversarial: 0, fgsm: 0}'
VARIANTS = {
    'cnn': ['model.use_se=false', 'model.use_gcn=false', 'model.landmark_head=false', NO_LOSS_TERMS],
    'cnn_se': ['model.use_se=true', 'model.use_gcn=false', 'model.landmark_head=false', NO_LOSS_TERMS],
    'cnn_se_gcn': ['model.use_se=true', 'model.use_gcn=true', 'model.landmark_head=false', NO_LOSS_TERMS],
    '+geometry': ['model.use_se=true', 'model.use_gcn=true', 'model.landmark_head=true',
                  'loss.weights={focal: 1.0, geometry: 0.1, adversarial: 0, fgsm: 0}'],
    '+adversarial': ['model.use_se=true', 'model.use_gcn=true', 'model.landmark_head=true',
                     'loss.weights={focal: 1.0, geometry: 0.1, adversarial: 0.01, fgsm: 0}'],
    '+fgsm': ['model.use_se=true', 'model.use_gcn=true', 'model.landmark_head=true',
              'loss.weights={focal: 1.0, geometry: 0.1, adversarial: 0.01, fgsm: 0.5}'],
}


def run_ablation(config_path, output, overrides=(), variants=tuple(VARIANTS)) -> list[dict]:
    """Train each variant into output/<variant>; returns one result row per variant."""
    output = Path(output)
    rows = []
    for name in variants:
        run_dir = output / name.lstrip('+')
        config = load_config(config_path, [*VARIANTS[name], *overrides, f'output_dir={run_dir}',
                                           f'name=ablation_{name.lstrip("+")}'])
        done = run_dir / 'result.json'
        if done.is_file():
            rows.append(json.loads(done.read_text()))
            continue
        best = train(config, resume=True)
        model, _ = load_model(run_dir / 'best')
        row = {'variant': name, 'val_accuracy': best.get('val_accuracy'), 'val_macro_f1': best.get('val_macro_f1'),
               'best_epoch': best.get('epoch'), 'epochs': config['train']['epochs'],
               'parameters': sum(p.numel() for p in model.parameters())}
        done.write_text(json.dumps(row))
        rows.append(row)
    output.mkdir(parents=True, exist_ok=True)
    (output / 'ablation.json').write_text(json.dumps({'config': str(config_path), 'overrides': list(overrides),
                                                      'rows': rows}, indent=2))
    (output / 'ablation.md').write_text(markdown_table(rows, config_path, overrides))
    return rows


def markdown_table(rows, config_path, overrides) -> str:
    command = ' '.join(['fer-ablation', '--config', str(config_path), *(f'--set {o}' for o in overrides)])
    lines = [f'Command: `{command}`', '', '| variant | val accuracy | val macro-F1 | best epoch | parameters |',
             '|---|---|---|---|---|']
    for row in rows:
        lines.append(f"| {row['variant']} | {row['val_accuracy']:.4f} | {row['val_macro_f1']:.4f} | "
                     f"{row['best_epoch']}/{row['epochs']} | {row['parameters']:,} |")
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(prog='fer-ablation', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--config', required=True)
    parser.add_argument('--output', default='runs/ablation')
    parser.add_argument('--variants', nargs='+', choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE')
    args = parser.parse_args(argv)
    rows = run_ablation(args.config, args.output, args.overrides, args.variants)
    print(markdown_table(rows, args.config, args.overrides))
    return rows


cli = console_script(main)


if __name__ == '__main__':
    main()
