"""Parity of the PyTorch face mesh with MediaPipe on dataset crops: detection agreement, landmark error.

Both backends see the same upscaled, padded crops (as the landmark cache
prepares them); the error is the mean landmark distance as a share of the
face box's long side (MediaPipe's landmarks as the reference).

  .venv/bin/python benchmarks/parity_face_mesh.py ../shared/data/fer2013/val ../shared/data/ckplus48 --limit 500
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from fer_ros.data.landmarks import FaceMeshDetector, TorchFaceMeshDetector, read_gray


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('folders', nargs='+', type=Path)
    parser.add_argument('--limit', type=int, default=500, help='images per folder (evenly spaced)')
    args = parser.parse_args(argv)
    mediapipe, torch_mesh = FaceMeshDetector(), TorchFaceMeshDetector()
    for folder in args.folders:
        paths = sorted(p for p in folder.rglob('*') if p.suffix.lower() in ('.png', '.jpg'))
        paths = paths[::max(1, len(paths) // args.limit)][:args.limit]
        grays = [read_gray(p) for p in paths]
        reference, other = mediapipe.detect_batch(grays), torch_mesh.detect_batch(grays)
        found = np.array([r is not None for r in reference]), np.array([o is not None for o in other])
        errors = [np.linalg.norm(r[:, :2] - o[:, :2], axis=1).mean() / (r[:, :2].max(0) - r[:, :2].min(0)).max()
                  for r, o in zip(reference, other) if r is not None and o is not None]
        print(f'{folder}: {len(paths)} images; faces found by MediaPipe {found[0].sum()}, torch {found[1].sum()}, '
              f'agreement {np.mean(found[0] == found[1]):.2%}; landmark error mean {100 * np.mean(errors):.3f}%, '
              f'p95 {100 * np.percentile(errors, 95):.3f}%, max {100 * np.max(errors):.3f}% of the face box')
    mediapipe.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
