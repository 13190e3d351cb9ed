"""Face-mesh models at inference on a CPU: the frozen graph on LiteRT, the trained head in PyTorch.

:class:`~fer_ros.model.face_mesh_features.FaceMeshTrunk` runs MediaPipe's face
mesh graph operator by operator in PyTorch, which training, gradients and GPUs
need. At inference on a CPU, LiteRT (TFLite's runtime, the ``ai-edge-litert``
wheel) runs the same checked file, the whole network in about 1.3 ms a face
on one thread where PyTorch takes about 7 ms to the 24 px stage; its stage
maps equal the PyTorch graph's to about 1e-5. :class:`LiteRTFaceMesh` reads those maps,
:class:`LiteRTLogits` feeds them to a model's trained head.
"""
import threading
import warnings

import numpy as np
import torch
from torch import nn

from fer_ros.model.face_mesh_features import STAGE_TENSORS, FaceMeshTrunk, checked_face_landmark_path
from fer_ros.model.tracing import frozen_trace

# Largest difference allowed between LiteRT's and PyTorch's logits on the start-up check.
LOGITS_TOLERANCE = 1e-4


class LiteRTUnavailable(RuntimeError):
    """LiteRT is not installed, or it does not reproduce the PyTorch graph on this machine."""


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

    def __call__(self, graph_inputs: np.ndarray) -> list[np.ndarray]:
        """float32 [B, 192, 192, 3] (NHWC) -> one float32 [B, C, h, w] array per stage."""
        outputs = [[] for _ in self.stages]
        with self._lock:
            for face in graph_inputs:
                self._interpreter.set_tensor(self._input, np.ascontiguousarray(face[None], np.float32))
                self._interpreter.invoke()
                for stage, maps in zip(self.stages, outputs):
                    maps.append(self._interpreter.get_tensor(STAGE_TENSORS[stage][0])[0].transpose(2, 0, 1))
        return [np.stack(maps) for maps in outputs]


class HeadLogits(nn.Module):
    """(cached stage map, landmarks, later stage maps...) -> a face-mesh head's logits (traceable)."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, features, landmarks, *stage_maps):
        return self.head(features, landmarks, stage_maps or None).logits


class LiteRTLogits:
    """Logits of a pretrained :class:`~fer_ros.model.face_mesh_cnn_se_gcn.FaceMeshCNNSEGCN` in eval mode,
    its frozen graph part on LiteRT and its head in PyTorch (TorchScript-traced with ``torchscript``).

    A frozen-stage head (the default model's) takes every stage from LiteRT; a
    fine-tuned one takes its cached stage and runs its own stages. The start-up
    check compares the logits with the all-PyTorch model on random faces and
    raises :class:`LiteRTUnavailable` beyond :data:`LOGITS_TOLERANCE`.
    """

    def __init__(self, model, num_threads: int = 1, torchscript: bool = True):
        if not model.config.pretrained:
            raise LiteRTUnavailable('the model was built on random face mesh weights, not the graph LiteRT runs')
        head = model.head.eval()
        stages = head.map_stages if head.frozen_graph_stages else head.map_stages[:1]
        self._graph = LiteRTFaceMesh(stages, num_threads)
        self._head = HeadLogits(head).eval()
        if torchscript:
            example = self._maps(torch.rand(2, 1, model.config.input_size, model.config.input_size))
            landmarks = torch.full((2, model.config.num_landmarks, 3), 0.5)
            self._head = frozen_trace(self._head, (example[0], landmarks, *example[1:]))
        self._check(model)

    def _maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        graph_inputs = FaceMeshTrunk.graph_input(images).permute(0, 2, 3, 1).numpy()
        return [torch.from_numpy(maps) for maps in self._graph(graph_inputs)]

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """images [B, 1, S, S] in [0, 1] and crop-normalised landmarks [B, 468, 3] (CPU) -> logits [B, C]."""
        maps = self._maps(images)
        return self._head(maps[0], landmarks, *maps[1:])

    @torch.no_grad()
    def _check(self, model) -> None:
        generator = torch.Generator().manual_seed(0)
        size = model.config.input_size
        images = torch.rand(3, 1, size, size, generator=generator)
        landmarks = torch.rand(3, model.config.num_landmarks, 3, generator=generator)
        difference = float((self(images, landmarks) - model.eval()(images, landmarks).logits).abs().max())
        if not difference <= LOGITS_TOLERANCE:
            raise LiteRTUnavailable(f'LiteRT logits differ from PyTorch by {difference:.2e} '
                                    f'(more than {LOGITS_TOLERANCE:g})')
