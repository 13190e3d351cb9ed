"""A face-mesh model's trained head exported to ONNX and checked against PyTorch.

:mod:`fer_ros.model.compiled` serves face-mesh models without PyTorch: LiteRT
runs the face mesh graph, ONNX Runtime the head this module exports. It runs
in a child process (``python -m fer_ros.model.head_export WEIGHTS OUT.onnx``)
so that the serving process never loads PyTorch. The export is kept only when
ONNX Runtime's logits, on LiteRT's stage maps, equal the all-PyTorch model's
within :data:`LOGITS_TOLERANCE` on seeded random faces.
"""
import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fer_ros.model.checkpoint import load_model
from fer_ros.model.compiled import HEAD_EXPORT_VERSION
from fer_ros.model.face_mesh_cnn_se_gcn import FaceMeshCNNSEGCN
from fer_ros.model.fused import FusedCNNSEGCN
from fer_ros.model.litert_face_mesh import LiteRTFaceMesh, graph_inputs
from fer_ros.model.metadata import checkpoint_paths, file_sha256

LOGITS_TOLERANCE = 1e-4
OPSET = 17
CHECK_FACES = 4


class HeadExportError(RuntimeError):
    """The model has no head to export, or its export does not reproduce PyTorch."""


class HeadLogits(nn.Module):
    """(cached stage map, landmarks, later stage maps...) -> a face-mesh head's logits."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, features, landmarks, *stage_maps):
        return self.head(features, landmarks, stage_maps or None).logits


def litert_stages(model: FaceMeshCNNSEGCN) -> tuple[str, ...]:
    """The stages LiteRT supplies: all of a frozen-stage head's, only the cached one of a fine-tuned head
    (which runs its own later stages)."""
    head = model.head
    return tuple(head.map_stages if head.frozen_graph_stages else head.map_stages[:1])


def export_head(weights_path, onnx_path) -> dict:
    """Write the head of the checkpoint at ``weights_path`` to ``onnx_path``; the description
    :mod:`fer_ros.model.compiled` keeps beside it (of a fused model: its face-mesh branch's head).
    ModelLoadError, HeadExportError or LiteRTUnavailable."""
    model, metadata = load_model(weights_path)
    if isinstance(model, FusedCNNSEGCN):
        model = model.mesh
    if not isinstance(model, FaceMeshCNNSEGCN):
        raise HeadExportError(f'{metadata["architecture"]} models have no face mesh head to export')
    if not model.config.pretrained:
        raise HeadExportError('the model was built on random face mesh weights, not the graph LiteRT runs')
    stages = litert_stages(model)
    graph = LiteRTFaceMesh(stages)
    size, points = model.config.input_size, model.config.num_landmarks
    generator = np.random.default_rng(0)
    crops = generator.integers(0, 256, (CHECK_FACES, size, size), dtype=np.uint8)
    landmarks = generator.random((CHECK_FACES, points, 3), dtype=np.float32)
    maps = graph(graph_inputs(crops))
    names = ['features', 'landmarks'] + [f'stage_{stage}' for stage in stages[1:]]
    example = tuple(torch.from_numpy(array) for array in (maps[0], landmarks, *maps[1:]))
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    partial = onnx_path.with_name(f'.{onnx_path.name}.{os.getpid()}')
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the TorchScript-based exporter's deprecation and tracer notes
        torch.onnx.export(HeadLogits(model.head).eval(), example, str(partial), dynamo=False, opset_version=OPSET,
                          input_names=names, output_names=['logits'],
                          dynamic_axes={name: {0: 'faces'} for name in [*names, 'logits']})
        expected = model(torch.from_numpy(crops.astype(np.float32) / 255.0)[:, None],
                         torch.from_numpy(landmarks)).logits.numpy()
    try:
        import onnxruntime
        session = onnxruntime.InferenceSession(str(partial), providers=['CPUExecutionProvider'])
        read = {node.name for node in session.get_inputs()}  # the export drops inputs the head ignores
        feeds = {name: value for name, value in zip(names, (maps[0], landmarks, *maps[1:])) if name in read}
        logits = session.run(None, feeds)[0]
        difference = float(np.abs(logits - expected).max())
        if not difference <= LOGITS_TOLERANCE:
            raise HeadExportError(f'ONNX Runtime logits differ from PyTorch by {difference:.2e} '
                                  f'(more than {LOGITS_TOLERANCE:g})')
        os.replace(partial, onnx_path)
    finally:
        partial.unlink(missing_ok=True)
    return {'weights_sha256': file_sha256(checkpoint_paths(weights_path)[0]),
            'onnx_sha256': file_sha256(onnx_path), 'export_version': HEAD_EXPORT_VERSION, 'stages': list(stages),
            'inputs': names, 'max_difference': difference, 'onnxruntime': onnxruntime.__version__,
            'torch': torch.__version__}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('weights', help='the model .safetensors (its .json beside it)')
    parser.add_argument('out', help='the .onnx to write; its description goes to the same name with .json')
    args = parser.parse_args(argv)
    try:
        description = export_head(args.weights, args.out)
    except (ValueError, RuntimeError, ImportError, OSError) as error:  # ModelLoadError is a ValueError
        print(f'head export failed: {error}', file=sys.stderr)
        return 1
    description_path = Path(args.out).with_suffix('.json')
    partial = description_path.with_name(f'.{description_path.name}.{os.getpid()}')
    partial.write_text(json.dumps(description, indent=2))
    os.replace(partial, description_path)  # whole, also when two nodes export the same model at once
    return 0


if __name__ == '__main__':
    sys.exit(main())
