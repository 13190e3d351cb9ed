"""``fer-ablation``: the CNN-SE-GCN ablation series, one training per variant, one table.

  fer-ablation --config config/train_fer2013.yaml --output runs/ablation
  fer-ablation --config config/train_fer2013.yaml --set train.epochs=3 --set data.max_per_class=300
  fer-ablation --config config/train_fer2013_facemesh.yaml --output runs/ablation_facemesh \
      --set train.epochs=3 --set augment.max_shift_cells=1

The variants depend on the config's architecture. ``cnn_se_gcn`` (from
scratch) adds one component at a time: CNN only, + SE, + GCN, + the landmark
head with the MSE geometric constraint, + the adversarial discriminator loss,
+ FGSM samples. ``cnn_se_gcn_facemesh`` (on face mesh features) takes the
config as it is (``full``) and changes one thing per variant: random-init
instead of face-pretrained weights (its own feature cache), no SE, no GCN,
no shift augmentation, the classification loss only (no landmark head),
no appearance at the landmarks, fine-tuned instead of frozen stages, no
geometric MSE, no adversarial term, the focal loss (gamma 2, class weights)
instead of label-smoothed cross-entropy, + FGSM samples (``no_shift``
compares against ``augment.max_shift_cells=1``, the config before the
ablation turned shifts off). Every variant gets the same config otherwise
(the --set overrides apply to all, so the same budget; a variant's own change
wins over them), and is selected on the validation split. Writes
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
SCRATCH_VARIANTS = {
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

def _loss(geometry, adversarial, fgsm):
    return f'loss.weights={{focal: 1.0, geometry: {geometry}, adversarial: {adversarial}, fgsm: {fgsm}}}'


# {feature_cache} is the config's data.feature_cache.
FACE_MESH_VARIANTS = {
    'full': [],
    'no_gcn': ['model.use_gcn=false'],
    'no_se': ['model.use_se=false'],
    'no_shift': ['augment.max_shift_cells=0'],
    'classification_only': ['model.landmark_head=false', _loss(0, 0, 0)],
    'random_init': ['model.pretrained=false', 'data.feature_cache={feature_cache}_random_init'],
    'no_appearance': ['model.landmark_appearance=false'],
    'tuned_stages': ['model.tune_stages=true'],
    'no_geometry': [_loss(0, 0.01, 0)],
    'no_adversarial': [_loss(0.1, 0, 0)],
    'focal_loss': ['loss.focal_gamma=2.0', 'loss.alpha_power=0.5'],
    '+fgsm': [_loss(0.1, 0.01, 0.5)],
}

VARIANTS = {'cnn_se_gcn': SCRATCH_VARIANTS, 'cnn_se_gcn_facemesh': FACE_MESH_VARIANTS}


def variants_of(config_path):
    """The variant table for the architecture of a config file."""
    architecture = load_config(config_path).get('architecture', 'cnn_se_gcn')
    if architecture not in VARIANTS:
        raise ValueError(f'no ablation variants for architecture {architecture!r}')
    return VARIANTS[architecture]


def run_ablation(config_path, output, overrides=(), variants=None) -> list[dict]:
    """Train each variant (default: all of the config's architecture) into output/<variant>; one row each."""
    output = Path(output)
    table = variants_of(config_path)
    unknown = set(variants or ()) - set(table)
    if unknown:
        raise ValueError(f'unknown variants {sorted(unknown)}; known: {list(table)}')
    feature_cache = str(load_config(config_path, overrides)['data'].get('feature_cache'))
    rows = []
    for name in variants or table:
        run_dir = output / name.lstrip('+')
        variant = [override.replace('{feature_cache}', feature_cache) for override in table[name]]
        # The variant's change wins over the common overrides (the budget, paths).
        config = load_config(config_path, [*overrides, *variant, f'output_dir={run_dir}',
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
    parser.add_argument('--variants', nargs='+', help='default: all variants of the config\'s architecture')
    parser.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE')
    args = parser.parse_args(argv)
    rows = run_ablation(args.config, args.output, args.overrides, args.variants)
    print(markdown_table(rows, args.config, args.overrides))
    return rows


cli = console_script(main)


if __name__ == '__main__':
    main()
