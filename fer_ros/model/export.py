"""``fer-export CHECKPOINT OUTPUT_STEM``: re-save a trained checkpoint for shipping.

``fer-export --last-epoch RUN_DIR OUTPUT_STEM`` exports a training run's last
epoch (its ``last.pt``) instead of a checkpoint, for fixed schedules whose
result is not chosen on the validation split. ``--branch pixel|mesh`` exports
one branch of a fused model as a model of its own (e.g. to fine-tune it per
CK+ fold from the shipped weights).

Loads and validates the checkpoint, stores the weights in float16 (half the
size; loaded back as float32), those the source stored as int8 again as int8,
and keeps the metadata, with ``name`` set to the
output file name so a node reports the name it was switched to. Compiled files
made for the source (a fused model's compiled pixel graph) are not carried over:
``fer-fuse`` makes them.
"""

import argparse
from pathlib import Path

from fer_ros.model.checkpoint import load_last_epoch, load_model, save_checkpoint
from fer_ros.model.fused import FusedCNNSEGCN

BRANCHES = ('pixel', 'mesh')


def fused_branch(model, metadata, branch) -> tuple:
    """(branch model, its metadata) of a fused model: the branch's own architecture, config and record."""
    if not isinstance(model, FusedCNNSEGCN):
        raise ValueError(f'--branch needs a {FusedCNNSEGCN.architecture} model, not {model.architecture}')
    if branch not in BRANCHES:
        raise ValueError(f'unknown branch {branch!r}; a fused model has {BRANCHES}')
    record = metadata.get('branches', {}).get(branch, {})
    branch_metadata = {'labels': metadata['labels'], 'branch_of': metadata.get('name', ''),
                       'metrics': record.get('metrics', {}),
                       'training_data': metadata.get('training_data', {}).get(branch)}
    stored_int8 = metadata.get('int8_weights')
    prefixes = stored_int8.get('prefixes', ()) if isinstance(stored_int8, dict) else ()
    own = [prefix[len(branch) + 1:] for prefix in prefixes if prefix.startswith(branch + '.')]
    if own:  # stored int8 again with the same scales: the same weights
        branch_metadata['int8_weights'] = {'prefixes': own}
    return getattr(model, branch), branch_metadata


def export(checkpoint, output, half: bool = True, last_epoch: bool = False, branch=None) -> tuple[Path, Path]:
    """Write OUTPUT.safetensors + OUTPUT.json from CHECKPOINT (a run directory with ``last_epoch``), or from
    its ``branch`` (pixel | mesh) when it is a fused model; returns both paths."""
    model, metadata = load_last_epoch(checkpoint) if last_epoch else load_model(checkpoint)
    if branch is not None:
        model, metadata = fused_branch(model, metadata, branch)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    stored_int8 = metadata.get('int8_weights')
    int8_prefixes = tuple(stored_int8.get('prefixes', ())) if isinstance(stored_int8, dict) else ()
    metadata = {key: value for key, value in metadata.items() if key != 'compiled'}  # files made for the source
    return save_checkpoint(output, model, dict(metadata, name=output.name), half=half, int8_prefixes=int8_prefixes)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='fer-export', description=__doc__.split('\n\n')[0])
    parser.add_argument('checkpoint', help='checkpoint (dir, stem, .safetensors or .json); '
                                           'with --last-epoch a fer-train output directory')
    parser.add_argument('output', help='output stem, e.g. fer_ros/weights/cnn_se_gcn_fer2013')
    parser.add_argument('--float32', action='store_true', help='keep float32 weights')
    parser.add_argument('--last-epoch', action='store_true', help="export the run's last epoch (last.pt)")
    parser.add_argument('--branch', choices=BRANCHES, help='export this branch of a fused model')
    args = parser.parse_args(argv)
    weights, metadata = export(args.checkpoint, args.output, half=not args.float32, last_epoch=args.last_epoch,
                               branch=args.branch)
    print(f'{weights} ({weights.stat().st_size / 1e6:.1f} MB), {metadata}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
