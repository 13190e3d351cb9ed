"""MediaPipe's face mesh graph on LiteRT, read out at its resolution stages (no PyTorch).

:class:`~fer_ros.model.face_mesh_features.FaceMeshTrunk` runs the graph
operator by operator in PyTorch, which training, gradients and GPUs need. At
inference on a CPU, LiteRT (TFLite's runtime, the ``ai-edge-litert`` wheel)
runs the same checked file, the whole network in about 1.3 ms a face on one
thread where PyTorch takes about 7 ms to the 24 px stage; its stage maps equal
the PyTorch graph's to about 1e-5 (a test checks it).
"""
import threading
import warnings

import cv2
import numpy as np

from fer_ros.vision.face_mesh_files import GRAPH_INPUT_SIZE, STAGE_TENSORS, checked_face_landmark_path


class LiteRTUnavailable(RuntimeError):
    """LiteRT is not installed, or it does not reproduce the PyTorch graph on this machine."""


def graph_inputs(crops: np.ndarray) -> np.ndarray:
    """uint8 gray crops [B, S, S] -> the graph's input float32 [B, 192, 192, 3] (NHWC) in [0, 1]: bilinear
    resize and the gray value in all three channels, as ``FaceMeshTrunk.graph_input`` does in PyTorch."""
    size = (GRAPH_INPUT_SIZE, GRAPH_INPUT_SIZE)
    resized = [cv2.resize(crop.astype(np.float32) / 255.0, size, interpolation=cv2.INTER_LINEAR) for crop in crops]
    return np.repeat(np.stack(resized)[..., None], 3, axis=-1) if resized else np.zeros((0, *size, 3), np.float32)


class LiteRTFaceMesh:
    """MediaPipe's face mesh file on LiteRT: graph inputs [B, 192, 192, 3] -> the named stages' maps.

    The graph's inner tensors are kept readable (``experimental_preserve_all_tensors``),
    so one invocation per face yields every stage. Thread-safe (one lock around
    the interpreter).
    """

    def __init__(self, stages, num_threads: int = 1, path=None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as error:
            raise LiteRTUnavailable(f'LiteRT is not installed (pip install ai-edge-litert): {error}') from None
        unknown = [stage for stage in stages if stage not in STAGE_TENSORS]
        if unknown:
            raise ValueError(f'unknown face mesh stages {unknown}; known: {sorted(STAGE_TENSORS)}')
        self.stages = tuple(stages)
        with warnings.catch_warnings():  # LiteRT warns that keeping inner tensors costs memory (a few MB here)
            warnings.simplefilter('ignore', UserWarning)
            self._interpreter = Interpreter(model_path=str(checked_face_landmark_path(path)),
                                            num_threads=max(1, num_threads),
                                            experimental_preserve_all_tensors=True)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]['index']
        self._lock = threading.Lock()

    def __call__(self, inputs: np.ndarray) -> list[np.ndarray]:
        """:func:`graph_inputs` float32 [B, 192, 192, 3] (NHWC) -> one float32 [B, C, h, w] array per stage."""
        outputs = [[] for _ in self.stages]
        with self._lock:
            for face in inputs:
                self._interpreter.set_tensor(self._input, np.ascontiguousarray(face[None], np.float32))
                self._interpreter.invoke()
                for stage, maps in zip(self.stages, outputs):
                    maps.append(self._interpreter.get_tensor(STAGE_TENSORS[stage][0])[0].transpose(2, 0, 1))
        return [np.stack(maps) for maps in outputs]
