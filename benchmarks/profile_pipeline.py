"""Per-stage time of one camera frame through the emotion node's code path, in one process.

Frames of the face video, letterboxed to 640x480, go through the stages the node runs for each
frame, each timed alone: decode (sensor_msgs/Image -> BGR), face detection + mesh (MediaPipe, one
call), align, classify (one batched forward pass), track + smoothing + valence/arousal, build the
EmotionArray, serialize it (CDR, what publish hands to DDS). Prints median and p95 per stage.

  PYTHONPATH=. .venv/bin/python benchmarks/profile_pipeline.py --frames 300
  PYTHONPATH=. .venv/bin/python benchmarks/profile_pipeline.py --frames 300 --pytorch   # classify in PyTorch
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image

from bench_node import DEFAULT_VIDEO, letterboxed_frames
from fer_ros.affect import valence_arousal
from fer_ros.cpu_features import cpu_features
from fer_ros.model.serving import load_classifier
from fer_ros.model_store import SHIPPED_MODEL_DIR, ModelStore
from fer_ros.msg import EmotionArray, EmotionStamped
from fer_ros.nodes.emotion_node import DEFAULT_MODEL
from fer_ros.nodes.ros_image import bgr_to_image_message, message_to_bgr
from fer_ros.vision.alignment import align_face
from fer_ros.vision.face_mesh import FaceMeshDetector
from fer_ros.vision.tracking import FaceTracker

STAGES = ('decode', 'detect + mesh', 'align', 'classify', 'track', 'build message', 'serialize')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=300)
    parser.add_argument('--model', default=DEFAULT_MODEL)
    parser.add_argument('--threads', type=int, default=1, help='inference threads, as the node (torch_threads '
                                                                'parameter)')
    parser.add_argument('--pytorch', action='store_true', help='classify with the TorchScript-traced PyTorch model '
                                                               'instead of the compiled one (the node\'s litert '
                                                               'parameter false)')
    parser.add_argument('--video', type=Path, default=DEFAULT_VIDEO)
    args = parser.parse_args(argv)
    frames = letterboxed_frames(args.video, 640, 480)
    messages = [bgr_to_image_message(frame, Image().header) for frame in frames]
    classifier, _ = load_classifier(ModelStore([SHIPPED_MODEL_DIR]).resolve(args.model), 'cpu', name=args.model,
                                    compiled=not args.pytorch, num_threads=args.threads)
    classifier.warm_up()
    print(f'{args.model}: {classifier.runtime}, {args.threads} thread(s)')
    detector = FaceMeshDetector(4, 0.5, video_mode=True)
    tracker = FaceTracker()
    times = {stage: [] for stage in STAGES}
    totals = []

    def timed(stage, function, *arguments):
        start = time.perf_counter()
        result = function(*arguments)
        times[stage].append(time.perf_counter() - start)
        return result

    try:
        for index in range(args.frames + 10):
            if index == 10:  # the first frames warm MediaPipe and the classifier up
                times = {stage: [] for stage in STAGES}
                totals = []
            message = messages[index % len(messages)]
            start = time.perf_counter()
            image = timed('decode', message_to_bgr, message)
            faces = timed('detect + mesh', detector.detect, image)
            aligned = timed('align', lambda: [align_face(image, face.landmarks) for face in faces])
            probabilities = timed('classify', lambda: classifier.predict(
                np.stack([c for c, _ in aligned]), np.stack([p for _, p in aligned])) if aligned else [])

            def track():
                ids = tracker.update([face.box for face in faces], index / 30.0)
                return [(face_id, tracker.smooth(face_id, p, classifier.labels), valence_arousal(p, classifier.labels))
                        for face_id, p in zip(ids, probabilities)]

            tracked = timed('track', track)
            array = timed('build message', lambda: EmotionArray(header=message.header, emotions=[
                EmotionStamped(header=message.header, face_id=face_id, label=classifier.labels[int(np.argmax(p))],
                               confidence=float(np.max(p)), labels=list(classifier.labels),
                               probabilities=p.tolist(), valence=va[0], arousal=va[1], model=classifier.name)
                for face_id, p, va in tracked]))
            timed('serialize', serialize_message, array)
            totals.append(time.perf_counter() - start)
    finally:
        detector.close()
    print(f'{args.frames} frames of {args.video.name} at 640x480, model {args.model} '
          f'({classifier.runtime}), {args.threads} inference thread(s), {os.cpu_count()} CPUs; '
          'milliseconds per frame:')
    print(f'CPU: {cpu_features().summary()}')
    print(f"{'stage':<16}{'median':>8}{'p95':>8}{'share':>8}")
    total_median = float(np.median(totals))
    for stage in STAGES:
        values = 1e3 * np.array(times[stage])
        print(f'{stage:<16}{np.median(values):8.2f}{np.percentile(values, 95):8.2f}'
              f'{100 * np.median(values) / (1e3 * total_median):7.0f}%')
    print(f"{'whole frame':<16}{1e3 * total_median:8.2f}{1e3 * np.percentile(totals, 95):8.2f}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
