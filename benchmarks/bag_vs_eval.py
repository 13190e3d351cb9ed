"""The bag path against fer-eval on the same dataset images, image by image.

Runs ``fer-bag-eval``'s offline replay of a bag made by ``fer-make-bag folder``
(frames in ``dataset_selection`` order) and ``fer-eval`` on the folder it was
made from, with both protocols: ``frames`` (given the bag's frame options it
must give the same predictions as the bag) and ``crops`` (the dataset
protocol: crops aligned on cached landmarks). Prints each accuracy on the
images where the bag path found a face and how often the labels agree.

  fer-make-bag folder ../shared/data/fer2013/val bags/fer_val --compressed
  .venv/bin/python benchmarks/bag_vs_eval.py bags/fer_val ../shared/data/fer2013/val --jpeg \
      --landmark-cache ../cache/landmarks
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from fer_ros.bag.evaluate import image_topic
from fer_ros.bag.make import dataset_selection
from fer_ros.bag.replay import run_offline
from fer_ros.model.inference import ExpressionClassifier
from fer_ros.model_store import SHIPPED_MODEL_DIR, ModelStore
from fer_ros.nodes.emotion_node import DEFAULT_MODEL
from fer_ros.pipeline import PipelineSettings
from fer_ros.training.evaluate import evaluate_checkpoint, evaluate_in_frames


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('bag')
    parser.add_argument('dataset', type=Path, help='the folder the bag was made from (all of it)')
    parser.add_argument('--landmark-cache', required=True, help='for the crops protocol')
    parser.add_argument('--model', default=DEFAULT_MODEL)
    parser.add_argument('--face-size', type=int, default=240, help='as given to fer-make-bag')
    parser.add_argument('--background', type=int, default=None, help='as given to fer-make-bag')
    parser.add_argument('--jpeg', action='store_true', help='the bag was made with --compressed')
    args = parser.parse_args(argv)
    path = ModelStore([SHIPPED_MODEL_DIR]).resolve(args.model)
    selection = [str(image) for image, _ in dataset_selection(args.dataset, None)]
    run = run_offline(args.bag, image_topic(args.bag, None), ExpressionClassifier(path, 'cpu'),
                      PipelineSettings(video_mode=False))
    if len(run.frames) != len(selection):
        raise SystemExit(f'{args.bag} has {len(run.frames)} frames, {args.dataset} has {len(selection)} images')
    bag_labels = {image: frame.primary.label if frame.primary else '' for image, frame in zip(selection, run.frames)}
    common = dict(kind='folder', split='', device='cpu')
    frames = evaluate_in_frames(path, args.dataset, face_size=args.face_size, background=args.background,
                                jpeg=args.jpeg, progress=True, **common)
    crops = evaluate_checkpoint(path, args.dataset, landmark_cache=args.landmark_cache, **common)
    truth = {row['image']: row['label'] for row in crops['predictions']}
    found = [image for image in selection if bag_labels[image]]
    print(f'{len(selection)} images; faces found: bag {len(found)}, fer-eval frames {frames["faces_found"]}')
    bag_accuracy = np.mean([bag_labels[image] == truth[image] for image in found])
    print(f'bag offline accuracy on those {len(found)}: {bag_accuracy:.4f}')
    for name, report in (('frames', frames), ('crops', crops)):
        predicted = {row['image']: row['predicted'] for row in report['predictions']}
        accuracy = np.mean([predicted[image] == truth[image] for image in found])
        same = np.mean([predicted[image] == bag_labels[image] for image in found])
        print(f'fer-eval --protocol {name}: accuracy {accuracy:.4f} on the same {len(found)} '
              f'(report: {report["accuracy"]:.4f} on {report["num_samples"]}); same label as the bag: {same:.4f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
