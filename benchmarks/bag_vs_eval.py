"""The bag path against the fer-eval path on the same dataset images.

Runs the offline bag evaluation of a bag made by ``fer-make-bag folder`` (whose
frames are the dataset's images in ``dataset_selection`` order) and the
fer-eval path (cached landmarks, crops of the original images) on the same
images, and prints both accuracies on the frames where the bag path found a
face, and how often the two give the same label.

  .venv/bin/python benchmarks/bag_vs_eval.py bags/fer_val ../shared/data/fer2013/val --landmark-cache ../cache/landmarks
"""

import argparse
import sys

import numpy as np
from torch.utils.data import DataLoader

from fer_ros.bag.evaluate import image_topic
from fer_ros.bag.make import dataset_selection
from fer_ros.bag.replay import run_offline
from fer_ros.data.datasets import FaceDataset, ImageSamples, prepare_faces
from fer_ros.data.landmarks import LandmarkCache
from fer_ros.model.checkpoint import load_model
from fer_ros.model.inference import ExpressionClassifier
from fer_ros.model_store import SHIPPED_MODEL_DIR, ModelStore
from fer_ros.nodes.emotion_node import DEFAULT_MODEL
from fer_ros.pipeline import PipelineSettings
from fer_ros.training.evaluate import predict_loader


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('bag')
    parser.add_argument('dataset', help='the folder the bag was made from')
    parser.add_argument('--per-class', type=int, default=None, help='as given to fer-make-bag')
    parser.add_argument('--landmark-cache', required=True)
    parser.add_argument('--model', default=DEFAULT_MODEL)
    args = parser.parse_args(argv)
    path = ModelStore([SHIPPED_MODEL_DIR]).resolve(args.model)
    selection = dataset_selection(args.dataset, args.per_class)
    run = run_offline(args.bag, image_topic(args.bag, None), ExpressionClassifier(path, 'cpu'),
                      PipelineSettings(video_mode=False))
    if len(run.frames) != len(selection):
        raise SystemExit(f'{args.bag} has {len(run.frames)} frames, {args.dataset} selection {len(selection)}')
    model, metadata = load_model(path)
    labels = list(metadata['labels'])
    truth = np.array([labels.index(label) for _, label in selection])
    samples = ImageSamples([image for image, _ in selection], truth, tuple(labels))
    faces = prepare_faces(samples, LandmarkCache(args.landmark_cache), model.config.input_size)
    eval_labels = predict_loader(model, DataLoader(FaceDataset(faces), batch_size=256), 'cpu')[0].argmax(axis=1)
    found = np.array([frame.primary is not None for frame in run.frames])
    bag_labels = np.array([labels.index(f.primary.label) if f.primary else -1 for f in run.frames])
    print(f'{len(found)} images; the bag path found a face in {found.sum()}')
    print(f'fer-eval path accuracy: {np.mean(eval_labels == truth):.4f} on all, '
          f'{np.mean(eval_labels[found] == truth[found]):.4f} on those {found.sum()}')
    print(f'bag path accuracy on those {found.sum()}: {np.mean(bag_labels[found] == truth[found]):.4f}')
    print(f'same label from both paths: {np.mean(bag_labels[found] == eval_labels[found]):.4f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
