"""Face-mesh models served on a CPU without PyTorch: LiteRT runs the face mesh graph, ONNX Runtime the head.

PyTorch is more than half of a node's memory (``import torch`` alone is about 540 MB
resident with the PyPI wheel). A :class:`CompiledClassifier` needs only
LiteRT, ONNX Runtime and numpy: the head is exported once per weights file
by :mod:`fer_ros.model.head_export` in a child process (which checks ONNX
Runtime's logits against PyTorch's) and kept in a cache folder, keyed by the
weights' sha256. Later loads check the cached file's sha256 and start in
well under a second. A fused model (``cnn_se_gcn_fused``) also runs its pixel
branch in ONNX Runtime, from the int8 or float32 graph ``fer-fuse`` ships beside it.
"""
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fer_ros.model.classifier import CheckpointClassifier
from fer_ros.model.litert_face_mesh import LiteRTFaceMesh, graph_inputs
from fer_ros.model.metadata import ModelLoadError, checkpoint_paths, file_sha256, read_metadata

FACE_MESH_ARCHITECTURE = 'cnn_se_gcn_facemesh'
FUSED_ARCHITECTURE = 'cnn_se_gcn_fused'
# Bumped whenever the head's code or its export changes, so no cache keeps an export of older code.
HEAD_EXPORT_VERSION = 4
EXPORT_TIMEOUT_S = 600.0


class CompiledUnavailable(RuntimeError):
    """The model cannot be served this way (another architecture, no ONNX Runtime, a failed export)."""


def default_cache_dir() -> Path:
    """``$ROS_HOME/fer_ros/compiled`` (``~/.ros/fer_ros/compiled`` by default)."""
    return Path(os.environ.get('ROS_HOME', Path.home() / '.ros')).expanduser() / 'fer_ros' / 'compiled'


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _description(onnx_path: Path, weights_sha256: str) -> dict | None:
    """The cached export's description when it belongs to these weights and the file is intact."""
    try:
        description = json.loads(onnx_path.with_suffix('.json').read_text())
        intact = (description['weights_sha256'] == weights_sha256
                  and description['export_version'] == HEAD_EXPORT_VERSION
                  and description['onnx_sha256'] == file_sha256(onnx_path))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return description if intact else None


def compiled_head(model_path, metadata: dict, cache_dir=None) -> tuple[Path, dict]:
    """(ONNX file, description) of the head of the model with this (read) metadata, exported (in a child
    process) unless cached."""
    weights_path, _ = checkpoint_paths(model_path)
    if metadata['architecture'] not in (FACE_MESH_ARCHITECTURE, FUSED_ARCHITECTURE):
        raise CompiledUnavailable(f'{metadata["architecture"]} models run in PyTorch')
    if not weights_path.is_file():
        raise ModelLoadError(f'model weights file {weights_path} not found')
    weights_sha256 = file_sha256(weights_path)
    if metadata.get('weights_sha256', weights_sha256) != weights_sha256:
        raise ModelLoadError(f'weights file {weights_path} does not match the sha256 in its JSON '
                             '(truncated, corrupted or replaced)')
    onnx_path = (Path(cache_dir or default_cache_dir())
                 / f'{weights_path.stem}-{weights_sha256[:16]}-v{HEAD_EXPORT_VERSION}.onnx')
    description = _description(onnx_path, weights_sha256)
    if description is None:
        command = [sys.executable, '-m', 'fer_ros.model.head_export', str(weights_path), str(onnx_path)]
        try:
            export = subprocess.run(command, capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise CompiledUnavailable(f'the head export took more than {EXPORT_TIMEOUT_S:g} s') from None
        if export.returncode != 0:
            lines = export.stderr.strip().splitlines() or [f'exit code {export.returncode}']
            raise CompiledUnavailable(lines[-1])
        description = _description(onnx_path, weights_sha256)
        if description is None:
            raise CompiledUnavailable(f'the head export left no valid {onnx_path}')
    return onnx_path, description


def pixel_graph(model_path, metadata: dict, weights_sha256: str) -> Path:
    """The compiled pixel branch (float32 or int8) of a fused checkpoint, beside its weights and checked
    against its JSON."""
    compiled = metadata.get('compiled')
    compiled = compiled if isinstance(compiled, dict) else {}
    precision = next((precision for precision in ('float32', 'int8') if f'pixel_{precision}' in compiled), None)
    record = compiled.get(f'pixel_{precision}')
    if not isinstance(record, dict) or not isinstance(record.get('file'), str):
        raise CompiledUnavailable('its JSON records no compiled pixel branch (fer-fuse --calibration-data '
                                  'makes one)')
    weights_path, _ = checkpoint_paths(model_path)
    path = weights_path.with_name(Path(record['file']).name)
    if not path.is_file():
        raise CompiledUnavailable(f'its {precision} pixel branch {path} is missing')
    if record.get('weights_sha256') != weights_sha256:
        raise CompiledUnavailable(f'{path.name} was made from other weights than {weights_path.name}')
    if record.get('sha256') != file_sha256(path):
        raise CompiledUnavailable(f'{path.name} does not match the sha256 in its JSON '
                                  '(truncated, corrupted or replaced)')
    return path


class CompiledClassifier(CheckpointClassifier):
    """A face-mesh or fused checkpoint that classifies batches of aligned crops on LiteRT + ONNX Runtime.

    The same interface as :class:`fer_ros.model.inference.ExpressionClassifier`,
    on the CPU only: probabilities equal to its eager model's within 1e-4 for a
    face-mesh model and a fused model with a float32 pixel graph; with an int8
    pixel graph within that graph's difference (0.15 at most on 512 FER-2013
    faces, halved by the mean; tests check each). :meth:`for_gradients` loads
    the PyTorch model of the same weights when something needs gradients (the
    self-check).
    """

    runtime = 'litert+onnxruntime'
    device = 'cpu'

    def __init__(self, model_path, name=None, num_threads: int = 1, cache_dir=None):
        try:
            import onnxruntime
        except ImportError as error:
            raise CompiledUnavailable(f'ONNX Runtime is not installed: {error}') from None
        metadata = read_metadata(model_path)
        onnx_path, description = compiled_head(model_path, metadata, cache_dir)
        self._model_path = model_path
        fused = metadata['architecture'] == FUSED_ARCHITECTURE
        config = metadata['config']['mesh'] if fused else metadata['config']
        super().__init__(model_path, metadata, name, config['input_size'], config['num_landmarks'])
        self.uses_landmarks = bool(config.get('use_gcn', True))
        self._graph = LiteRTFaceMesh(description['stages'], num_threads)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = max(1, num_threads)
        self._session = onnxruntime.InferenceSession(str(onnx_path), options, providers=['CPUExecutionProvider'])
        self._pixel_session, self._pixel_weight, self._pixel_worker = None, 0.0, None
        if fused:
            graph = pixel_graph(model_path, metadata, description['weights_sha256'])
            self._pixel_session = onnxruntime.InferenceSession(str(graph), options, providers=['CPUExecutionProvider'])
            self._pixel_weight = float(metadata['config']['pixel_weight'])
            # The pixel branch runs beside the face-mesh branch (both runtimes release the GIL).
            self._pixel_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix='fer-pixel-branch')
        # The export drops inputs a head does not read (landmarks, without a GCN).
        read = {node.name for node in self._session.get_inputs()}
        self._inputs = [name if name in read else None for name in description['inputs']]
        self._for_gradients = None
        self._for_gradients_lock = threading.Lock()

    def predict(self, crops, landmarks=None):
        """Class probabilities float32 [N, C]: ``crops`` uint8 [N, S, S] and crop-normalised ``landmarks``
        [N, 468, 3] from :func:`fer_ros.vision.alignment.align_face` (required when :attr:`uses_landmarks`)."""
        crops = self._checked_crops(crops)
        if len(crops) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        if landmarks is None:
            if self.uses_landmarks:
                raise ValueError(f'model {self.name} needs landmarks')
            landmarks = np.zeros((len(crops), self.num_landmarks, 3), np.float32)  # the head ignores them
        landmarks = np.asarray(landmarks, np.float32)
        if landmarks.shape != (len(crops), self.num_landmarks, 3):
            raise ValueError(f'landmarks must be [{len(crops)}, {self.num_landmarks}, 3], got {landmarks.shape}')
        pixel = self._pixel_worker.submit(self._pixel_probabilities, crops) if self._pixel_worker else None
        maps = self._graph(graph_inputs(crops))
        feeds = {name: value for name, value in zip(self._inputs, (maps[0], landmarks, *maps[1:])) if name}
        probabilities = softmax(self._session.run(None, feeds)[0])
        if pixel is not None:  # as FusedCNNSEGCN fuses its branches
            probabilities = self._pixel_weight * pixel.result() + (1.0 - self._pixel_weight) * probabilities
        return probabilities.astype(np.float32)

    def _pixel_probabilities(self, crops) -> np.ndarray:
        return softmax(self._pixel_session.run(None, {'image': (crops.astype(np.float32) / 255.0)[:, None]})[0])

    def for_gradients(self):
        """The same weights as an :class:`~fer_ros.model.inference.ExpressionClassifier` (loads PyTorch)."""
        with self._for_gradients_lock:
            if self._for_gradients is None:
                from fer_ros.model.inference import ExpressionClassifier
                self._for_gradients = ExpressionClassifier(self._model_path, device='cpu', name=self._name)
            return self._for_gradients
