"""``fer-export CHECKPOINT OUTPUT_STEM``: re-save a trained checkpoint for shipping.

Loads and validates the checkpoint, stores the weights in float16 (half the
size; loaded back as float32), those the source stored as int8 again as int8,
and keeps the metadata, with ``name`` set to the
output file name so a node reports the name it was switched to. Compiled files
made for the source (a fused model's int8 pixel graph) are not carried over:
``fer-fuse`` makes them.
"""

import argparse
from pathlib import Path

from fer_ros.model.checkpoint import load_model, save_checkpoint


def export(checkpoint, output, half: bool = True) -> tuple[Path, Path]:
    """Write OUTPUT.safetensors + OUTPUT.json from CHECKPOINT; returns both paths."""
    model, metadata = load_model(checkpoint)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    stored_int8 = metadata.get('int8_weights')
    int8_prefixes = tuple(stored_int8.get('prefixes', ())) if isinstance(stored_int8, dict) else ()
    metadata = {key: value for key, value in metadata.items() if key != 'compiled'}  # files made for the source
    return save_checkpoint(output, model, dict(metadata, name=output.name), half=half, int8_prefixes=int8_prefixes)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='fer-export', description=__doc__.split('\n\n')[0])
    parser.add_argument('checkpoint', help='checkpoint (dir, stem, .safetensors or .json)')
    parser.add_argument('output', help='output stem, e.g. fer_ros/weights/cnn_se_gcn_fer2013')
    parser.add_argument('--float32', action='store_true', help='keep float32 weights')
    args = parser.parse_args(argv)
    weights, metadata = export(args.checkpoint, args.output, half=not args.float32)
    print(f'{weights} ({weights.stat().st_size / 1e6:.1f} MB), {metadata}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
