"""The classifier's CPU runtimes side by side, ms per face: eager PyTorch, the TorchScript-traced model
(the node's torchscript parameter) and, for face-mesh and fused models, the compiled model without
PyTorch (LiteRT + ONNX Runtime, the fused model's pixel branch int8: its litert parameter, the node's
default), with the largest probability difference.

  PYTHONPATH=. .venv/bin/python benchmarks/bench_runtimes.py                 # the shipped models, batch 1, 1 thread
  PYTHONPATH=. .venv/bin/python benchmarks/bench_runtimes.py --batch 32 --threads 2
  PYTHONPATH=. .venv/bin/python benchmarks/bench_runtimes.py --model-dir runs/candidates --models my_model
"""

import argparse
import sys
import time

import numpy as np
import torch

from fer_ros.cpu_features import cpu_features
from fer_ros.model.compiled import CompiledClassifier, CompiledUnavailable
from fer_ros.model.inference import ExpressionClassifier
from fer_ros.model_store import SHIPPED_MODEL_DIR, ModelStore

MODELS = ('cnn_se_gcn_fer2013', 'cnn_se_gcn_facemesh_fer2013', 'cnn_se_fer2013', 'pcnn_fer2013', 'efficientnet_b2_fer2013')


def per_face_ms(classifier, crops, landmarks, repeats: int) -> str:
    """Median and 90th percentile of the per-face time over ``repeats`` calls: on a shared machine the
    mean follows the neighbours' load spikes."""
    for _ in range(10):
        classifier.predict(crops, landmarks)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        classifier.predict(crops, landmarks)
        times.append((time.perf_counter() - start) / len(crops) * 1e3)
    return f'{np.median(times):6.2f} (p90 {np.percentile(times, 90):6.2f})'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--models', nargs='+', default=list(MODELS))
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=100)
    parser.add_argument('--model-dir', action='append', default=[],
                        help='a folder of models searched before the shipped ones (repeatable)')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (args.batch, 48, 48), dtype=np.uint8)
    landmarks = rng.random((args.batch, 468, 3), dtype=np.float32)
    print(f'CPU: {cpu_features().summary()}')
    print(f'ms per face, batch {args.batch}, {args.threads} thread(s), median (p90) of {args.repeats} calls:')
    store = ModelStore([*args.model_dir, SHIPPED_MODEL_DIR])
    for name in args.models:
        path = store.resolve(name)
        eager = ExpressionClassifier(path, 'cpu')
        reference = eager.predict(crops, landmarks)
        row = f'{name:<28} eager {per_face_ms(eager, crops, landmarks, args.repeats)}'
        runtimes = [ExpressionClassifier(path, 'cpu', torchscript=True)]
        try:
            runtimes.append(CompiledClassifier(path, num_threads=args.threads))
        except CompiledUnavailable:
            pass  # neither a face-mesh nor a fused model
        for classifier in runtimes:
            difference = np.abs(classifier.predict(crops, landmarks) - reference).max()
            row += (f'  {classifier.runtime} {per_face_ms(classifier, crops, landmarks, args.repeats)} '
                    f'(largest difference {difference:.1e})')
        print(row)
    return 0


if __name__ == '__main__':
    sys.exit(main())
