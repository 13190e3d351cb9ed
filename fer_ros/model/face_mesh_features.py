"""Face-pretrained features: MediaPipe's face mesh network cut into a frozen trunk and trainable stages.

The face mesh (``face_landmark.tflite`` in the installed mediapipe wheel,
Apache License 2.0, Copyright The MediaPipe Authors) was trained on a very
large set of faces to place 468 points; its feature maps describe brows,
eyelids, mouth and cheeks. It runs here through
:class:`fer_ros.vision.tflite_graph.TFLiteGraph`'s operators, cut at the
outputs of its resolution stages (:data:`STAGE_TENSORS`, for a 192 px input):

* :class:`FaceMeshTrunk` runs the graph from the image to a cut stage
  (frozen; its weights are read from the wheel at run time and never enter a
  checkpoint). Its output is what :mod:`fer_ros.data.feature_cache` stores.
* :class:`GraphSection` runs the operators between two stages with their
  constants frozen or as trainable parameters initialised from the graph, so
  the last stages can be fine-tuned on cached trunk outputs.

The wheel's file is checked (:mod:`fer_ros.vision.face_mesh_files`).
"""
import torch
import torch.nn.functional as F
from torch import nn

from fer_ros.vision.face_mesh_files import GRAPH_INPUT_SIZE, STAGE_TENSORS, checked_face_landmark_path
from fer_ros.vision.tflite_graph import TFLiteGraph, load_tflite, run_operator


def load_face_mesh_graph(path=None) -> TFLiteGraph:
    """The face mesh graph (default: the installed wheel's), checked against FACE_LANDMARK_SHA256."""
    return load_tflite(checked_face_landmark_path(path))


def _stage_tensor(stage):
    if stage not in STAGE_TENSORS:
        raise ValueError(f'unknown face mesh stage {stage!r}; known: {sorted(STAGE_TENSORS)}')
    return STAGE_TENSORS[stage][0]


class GraphSection(nn.Module):
    """The operators of a TFLite graph that turn tensor ``start`` into tensor ``end`` (NCHW in and out).

    ``start=None`` begins at the graph input. Constants become trainable
    parameters (``trainable``; paddings stay buffers) or buffers. Frozen
    pretrained constants stay out of state dicts (they come from the wheel).
    ``reinitialise`` draws fresh convolution weights of the same shapes
    instead of the pretrained ones (the random-init ablation); those are saved.
    """

    def __init__(self, graph: TFLiteGraph, start, end, trainable=False, reinitialise=False):
        super().__init__()
        order = [op for op in graph.operators if op.kind != 'DEQUANTIZE']
        produced_at = {op.outputs[0]: position for position, op in enumerate(order)}
        first = 0 if start is None else produced_at[start] + 1
        self.operators = order[first:produced_at[end] + 1]
        self.start = graph.inputs[0] if start is None else start
        self.end = end
        self.shapes = graph.shapes
        self._names = {}
        constants = set(graph.constant_indices)
        for op in self.operators:
            for index in op.inputs:
                if index not in constants or index in self._names:
                    continue
                value = graph.constant(index).clone()
                if reinitialise and op.kind in ('CONV_2D', 'DEPTHWISE_CONV_2D'):
                    value = _fresh_like(value)
                name = f'constant_{index}'
                if trainable and value.is_floating_point() and op.kind != 'PAD':
                    self.register_parameter(name, nn.Parameter(value))
                else:
                    self.register_buffer(name, value, persistent=trainable or reinitialise)
                self._names[index] = name

    def constant(self, index):
        return getattr(self, self._names[index])

    def forward(self, x):
        values = {index: getattr(self, name) for index, name in self._names.items()}
        values[self.start] = x
        for op in self.operators:
            values[op.outputs[0]] = run_operator(op, values, self.constant, self.shapes)
        return values[self.end]


def _fresh_like(value):
    """Kaiming-uniform weights (zero biases) of the shape of a graph constant."""
    if value.dim() < 2:
        return torch.zeros_like(value)
    fresh = torch.empty_like(value)
    nn.init.kaiming_uniform_(fresh, a=0.25)
    return fresh


class FaceMeshTrunk(nn.Module):
    """Aligned gray crops [B, 1, S, S] in [0, 1] -> the face mesh's ``stage`` feature map (frozen).

    The crop is resized to the graph's 192 px input (bilinear) and repeated
    into its three channels, as the graph sees a face.
    """

    def __init__(self, stage='24px', pretrained=True, graph=None):
        super().__init__()
        graph = graph or load_face_mesh_graph()
        self.stage, self.pretrained = stage, pretrained
        self.section = GraphSection(graph, None, _stage_tensor(stage), reinitialise=not pretrained)

    @staticmethod
    def graph_input(images):
        """[B, 1, S, S] in [0, 1] -> [B, 3, 192, 192], the graph's input in NCHW."""
        resized = F.interpolate(images, size=(GRAPH_INPUT_SIZE, GRAPH_INPUT_SIZE), mode='bilinear',
                                align_corners=False)
        return resized.expand(-1, 3, -1, -1)

    def forward(self, images):
        return self.section(self.graph_input(images))


def stage_section(graph, start_stage, end_stage, trainable=True, reinitialise=False):
    """GraphSection from one stage's output to a later one's (e.g. '24px' -> '12px')."""
    return GraphSection(graph, _stage_tensor(start_stage), _stage_tensor(end_stage), trainable, reinitialise)
