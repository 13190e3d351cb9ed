"""How far ONNX Runtime's int8 kernels move a fused model's pixel graph from what the graph itself defines.

The int8 pixel graph is a QDQ graph: each quantised tensor is dequantised, the float operator runs, the
result is quantised again. With graph optimisations off ONNX Runtime runs exactly that; with them on (as
the node runs it) it fuses each DequantizeLinear -> op -> QuantizeLinear into one integer kernel
(QLinearConv and friends), whose rounding differs by a quantum here and there. This script prints the
largest and mean probability difference between the two and against the float PyTorch branch, on aligned
crops of a split:

  PYTHONPATH=. .venv/bin/python benchmarks/int8_kernels_vs_qdq.py fer_ros/weights/cnn_se_gcn_fer2013 \\
      ../shared/data/fer2013 --landmark-cache ../cache/landmarks
"""

import argparse

import numpy as np
import onnxruntime
import torch

from fer_ros.model.checkpoint import load_model
from fer_ros.model.compiled import pixel_graph, softmax
from fer_ros.model.metadata import checkpoint_paths, file_sha256
from fer_ros.training.fuse import _images, calibration_crops


def graph_probabilities(path, images, level) -> np.ndarray:
    """Softmax of the graph's logits, one face per call as the node runs it, at one thread."""
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    return np.concatenate([softmax(session.run(None, {'image': image[None]})[0]) for image in images])


def describe(name, probabilities, reference) -> str:
    difference = np.abs(probabilities - reference)
    over = int((difference.max(axis=1) > 1e-4).sum())
    return (f'{name:34s} max {difference.max():.1e}  mean {difference.mean():.1e}  faces over 1e-4: '
            f'{over} of {len(reference)}  same top class: {np.mean(probabilities.argmax(1) == reference.argmax(1)):.1%}')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('model', help='a fused model with an int8 pixel graph')
    parser.add_argument('data', help='fer2013 folder')
    parser.add_argument('--split', default='train')
    parser.add_argument('--landmark-cache')
    parser.add_argument('--faces', type=int, default=512)
    parser.add_argument('--seed', type=int, default=1, help='seed 0 draws the crops fer-fuse calibrated on')
    args = parser.parse_args(argv)
    model, metadata = load_model(args.model)
    graph = pixel_graph(args.model, metadata, file_sha256(checkpoint_paths(args.model)[0]))
    if 'pixel_int8' not in metadata['compiled']:
        parser.error(f'{args.model} has a {graph.name}, not an int8 pixel graph')
    crops, _ = calibration_crops(args.data, 'fer2013', args.split, args.landmark_cache, args.faces, args.seed)
    images = _images(crops)
    levels = onnxruntime.GraphOptimizationLevel
    defined = graph_probabilities(graph, images, levels.ORT_DISABLE_ALL)
    served = graph_probabilities(graph, images, levels.ORT_ENABLE_ALL)
    with torch.no_grad():
        eager = torch.softmax(model.pixel(torch.from_numpy(images)).logits, dim=1).numpy()
    print(f'{graph.name}, {len(images)} aligned {args.split} crops, onnxruntime {onnxruntime.__version__}')
    print(describe('int8 kernels vs the QDQ graph', served, defined))
    print(describe('the QDQ graph vs float PyTorch', defined, eager))
    print(describe('int8 kernels vs float PyTorch', served, eager))


if __name__ == '__main__':
    main()
