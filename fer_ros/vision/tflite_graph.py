"""Run a TensorFlow Lite model's graph as a batched PyTorch module (CPU or GPU).

MediaPipe ships its face detector and face mesh as ``.tflite`` flatbuffers.
:func:`load_tflite` parses one with the ``tflite`` package (the TFLite schema
for Python), turns its float16 constants into float32 torch tensors in torch
layouts, and :class:`TFLiteGraph` executes the operators in graph order on a
whole batch. Only the operators of MediaPipe's face models are supported
(CONV_2D, DEPTHWISE_CONV_2D, ADD, PRELU, RELU, MAX_POOL_2D, PAD, RESHAPE,
CONCATENATION, DEQUANTIZE); anything else is refused when loading.

Converting on load takes about 25 ms per model (measured on a 2-core machine), so
no converted copy is cached on disk.

Layout: 4-D activations are NCHW inside the module; inputs and outputs use the
TFLite shapes (NHWC), with the batch dimension free.
"""

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import tflite
from tflite.ActivationFunctionType import ActivationFunctionType
from tflite.BuiltinOperator import BuiltinOperator
from tflite.Padding import Padding
from tflite.TensorType import TensorType
from torch import nn

_OPERATOR_NAMES = {value: name for name, value in vars(BuiltinOperator).items() if not name.startswith('_')}
_NUMPY_TYPES = {TensorType.FLOAT32: np.float32, TensorType.FLOAT16: np.float16, TensorType.INT32: np.int32,
                TensorType.INT64: np.int64}
SUPPORTED = {'CONV_2D', 'DEPTHWISE_CONV_2D', 'ADD', 'PRELU', 'RELU', 'MAX_POOL_2D', 'PAD', 'RESHAPE',
             'CONCATENATION', 'DEQUANTIZE'}


class TFLiteError(ValueError):
    """A .tflite file that cannot be read or uses an unsupported operator."""


@dataclass
class Operator:
    kind: str
    inputs: list[int]
    outputs: list[int]
    options: dict


def _options(kind: str, op) -> dict:
    table = op.BuiltinOptions()
    if table is None:
        return {}
    if kind in ('CONV_2D', 'DEPTHWISE_CONV_2D'):
        options = (tflite.Conv2DOptions if kind == 'CONV_2D' else tflite.DepthwiseConv2DOptions)()
        options.Init(table.Bytes, table.Pos)
        return {'stride': (options.StrideH(), options.StrideW()), 'same': options.Padding() == Padding.SAME,
                'dilation': (options.DilationHFactor(), options.DilationWFactor()),
                'activation': options.FusedActivationFunction()}
    if kind == 'MAX_POOL_2D':
        options = tflite.Pool2DOptions()
        options.Init(table.Bytes, table.Pos)
        return {'stride': (options.StrideH(), options.StrideW()), 'same': options.Padding() == Padding.SAME,
                'kernel': (options.FilterHeight(), options.FilterWidth()),
                'activation': options.FusedActivationFunction()}
    if kind == 'ADD':
        options = tflite.AddOptions()
        options.Init(table.Bytes, table.Pos)
        return {'activation': options.FusedActivationFunction()}
    if kind == 'CONCATENATION':
        options = tflite.ConcatenationOptions()
        options.Init(table.Bytes, table.Pos)
        return {'axis': options.Axis(), 'activation': options.FusedActivationFunction()}
    return {}


def load_tflite(path) -> 'TFLiteGraph':
    """Parse a .tflite file into a TFLiteGraph module (float32 weights); TFLiteError if it cannot."""
    path = Path(path)
    try:
        return _parse(path, path.read_bytes())
    except TFLiteError:
        raise
    except (OSError, struct.error, IndexError, ValueError, TypeError, AttributeError) as error:
        raise TFLiteError(f'cannot read TFLite model {path}: {error}') from error


def _parse(path: Path, data: bytes) -> 'TFLiteGraph':
    model = tflite.Model.GetRootAsModel(data, 0)
    graph = model.Subgraphs(0)
    shapes, constants = {}, {}
    for index in range(graph.TensorsLength()):
        tensor = graph.Tensors(index)
        shapes[index] = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
        data = model.Buffers(tensor.Buffer()).DataAsNumpy()
        if isinstance(data, np.ndarray) and data.size:
            if tensor.Type() not in _NUMPY_TYPES:
                raise TFLiteError(f'{path}: tensor {tensor.Name()!r} has unsupported type {tensor.Type()}')
            constants[index] = data.view(_NUMPY_TYPES[tensor.Type()]).reshape(shapes[index])
    operators = []
    for index in range(graph.OperatorsLength()):
        op = graph.Operators(index)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = _OPERATOR_NAMES.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), 'CUSTOM')
        if kind not in SUPPORTED:
            raise TFLiteError(f'{path}: operator {kind} is not supported')
        operators.append(Operator(kind, [int(i) for i in op.InputsAsNumpy()], [int(i) for i in op.OutputsAsNumpy()],
                                  _options(kind, op)))
    inputs = [int(i) for i in graph.InputsAsNumpy()]
    outputs = [int(i) for i in graph.OutputsAsNumpy()]
    output_names = [graph.Tensors(i).Name().decode() for i in outputs]
    return TFLiteGraph(operators, shapes, constants, inputs, outputs, output_names)


def _same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TFLite SAME padding (extra pixel at the end), as (before, after)."""
    effective = (kernel - 1) * dilation + 1
    output = -(-size // stride)
    total = max((output - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _activate(x, activation: int):
    if activation == ActivationFunctionType.RELU:
        return F.relu(x)
    if activation == ActivationFunctionType.RELU6:
        return F.relu6(x)
    if activation != ActivationFunctionType.NONE:
        raise TFLiteError(f'fused activation {activation} is not supported')
    return x


class TFLiteGraph(nn.Module):
    """A TFLite graph as a torch module; forward(NHWC input) -> list of outputs in TFLite shapes."""

    def __init__(self, operators, shapes, constants, inputs, outputs, output_names):
        super().__init__()
        self.operators, self.shapes = operators, shapes
        self.inputs, self.outputs, self.output_names = inputs, outputs, output_names
        dequantized = {op.outputs[0]: constants[op.inputs[0]] for op in operators if op.kind == 'DEQUANTIZE'}
        values = {**constants, **dequantized}
        self._constant_names = {}
        for op in operators:
            for position, index in enumerate(op.inputs):
                if index in values and index not in self._constant_names and op.kind != 'DEQUANTIZE':
                    self._register(op, position, index, values[index])

    def _register(self, op, position, index, array):
        array = np.asarray(array, np.float32 if array.dtype.kind == 'f' else array.dtype)
        if op.kind == 'CONV_2D' and position == 1:
            array = array.transpose(0, 3, 1, 2)          # OHWI -> OIHW
        elif op.kind == 'DEPTHWISE_CONV_2D' and position == 1:
            array = array.transpose(3, 0, 1, 2)          # 1HW(C*M) -> (C*M)1HW
        elif op.kind == 'PRELU':
            array = array.reshape(-1)                    # per channel
        name = f'constant_{index}'
        self.register_buffer(name, torch.from_numpy(np.array(array)))
        self._constant_names[index] = name

    @property
    def constant_indices(self):
        """Indices of the graph's constant tensors (weights, biases, PReLU slopes, paddings)."""
        return tuple(self._constant_names)

    def constant(self, index):
        """A constant tensor (torch layout: OIHW convolution weights, flat PReLU slopes)."""
        return getattr(self, self._constant_names[index])

    def forward(self, x, tensors=None):
        """The graph's outputs, or the tensors of the given indices (e.g. intermediate feature maps)."""
        values = {index: getattr(self, name) for index, name in self._constant_names.items()}
        values[self.inputs[0]] = x.permute(0, 3, 1, 2) if x.dim() == 4 else x
        for op in self.operators:
            if op.kind == 'DEQUANTIZE':
                continue
            values[op.outputs[0]] = run_operator(op, values, self.constant, self.shapes)
        wanted = self.outputs if tensors is None else tensors
        return [values[i].permute(0, 2, 3, 1) if values[i].dim() == 4 else values[i] for i in wanted]


def run_operator(op: Operator, values: dict, constant, shapes: dict):
    """Output of one operator; ``values`` maps tensor indices to tensors (4-D ones NCHW),
    ``constant(index)`` returns a constant tensor, ``shapes`` the graph's TFLite tensor shapes."""
    o = op.options
    if op.kind in ('CONV_2D', 'DEPTHWISE_CONV_2D'):
        x, weight, bias = values[op.inputs[0]], constant(op.inputs[1]), constant(op.inputs[2])
        if o['same']:
            top, bottom = _same_padding(x.shape[2], weight.shape[2], o['stride'][0], o['dilation'][0])
            left, right = _same_padding(x.shape[3], weight.shape[3], o['stride'][1], o['dilation'][1])
            x = F.pad(x, (left, right, top, bottom))
        groups = x.shape[1] if op.kind == 'DEPTHWISE_CONV_2D' else 1
        return _activate(F.conv2d(x, weight, bias, o['stride'], 0, o['dilation'], groups), o['activation'])
    if op.kind == 'MAX_POOL_2D':
        x = values[op.inputs[0]]
        if o['same']:
            top, bottom = _same_padding(x.shape[2], o['kernel'][0], o['stride'][0])
            left, right = _same_padding(x.shape[3], o['kernel'][1], o['stride'][1])
            x = F.pad(x, (left, right, top, bottom), value=float('-inf'))
        return _activate(F.max_pool2d(x, o['kernel'], o['stride']), o['activation'])
    if op.kind == 'ADD':
        return _activate(values[op.inputs[0]] + values[op.inputs[1]], o['activation'])
    if op.kind == 'RELU':
        return F.relu(values[op.inputs[0]])
    if op.kind == 'PRELU':
        x, alpha = values[op.inputs[0]], constant(op.inputs[1])
        return torch.where(x >= 0, x, x * alpha.view(1, -1, 1, 1))
    if op.kind == 'PAD':
        x, pads = values[op.inputs[0]], constant(op.inputs[1]).tolist()  # NHWC [[b, a] x 4]
        return F.pad(x, (*pads[2], *pads[1], *pads[3]))  # W, H, C in NCHW order of F.pad
    if op.kind == 'RESHAPE':
        x = values[op.inputs[0]]
        if x.dim() == 4:
            x = x.permute(0, 2, 3, 1)
        return x.reshape(x.shape[0], *shapes[op.outputs[0]][1:])
    if op.kind == 'CONCATENATION':
        tensors = [values[i] for i in op.inputs]
        axis = o['axis'] if o['axis'] >= 0 else o['axis'] + tensors[0].dim()
        if tensors[0].dim() == 4:
            axis = (0, 2, 3, 1)[axis]
        return _activate(torch.cat(tensors, dim=axis), o['activation'])
    raise TFLiteError(f'operator {op.kind} is not supported')
