"""Batched expression classification with PyTorch (no ROS imports)."""

import numpy as np
import torch
from torch import nn

from fer_ros.model.checkpoint import load_model
from fer_ros.model.classifier import CheckpointClassifier
from fer_ros.model.tracing import frozen_trace

def resolve_device(device='auto'):
    """'auto' -> cuda when available else cpu; 'cpu', 'cuda' and 'cuda:N' pass through."""
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    device = torch.device(device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError('device cuda requested but CUDA is not available')
    return device


class LogitsOf(nn.Module):
    """(image, landmarks) -> logits of a model (a tensor output, as tracing needs)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image, landmarks):
        return self.model(image, landmarks).logits


def traced_logits(model, input_size: int, num_landmarks: int, device) -> torch.jit.ScriptModule:
    """The eval-mode model traced and frozen by TorchScript (same outputs, less Python per forward)."""
    example = (torch.zeros(2, 1, input_size, input_size, device=device),
               torch.full((2, num_landmarks, 3), 0.5, device=device))
    return frozen_trace(LogitsOf(model), example)


class ExpressionClassifier(CheckpointClassifier):
    """A loaded checkpoint that classifies batches of aligned crops in PyTorch.

    ``torchscript``: run predictions through the TorchScript-traced model
    (outputs equal to the eager model within 1e-4, a test checks it; about
    15-45% less time per face on CPU); a model that cannot be traced runs
    eagerly and :attr:`trace_error` says why. :attr:`model` stays the eager
    PyTorch one (the self-check needs its gradients). On a CPU, face-mesh
    models are served faster and in less memory by
    :class:`fer_ros.model.compiled.CompiledClassifier`.
    """

    def __init__(self, model_path, device='auto', name=None, torchscript=False):
        self._device = resolve_device(device)
        self._model, metadata = load_model(model_path, self._device)
        super().__init__(model_path, metadata, name, self._model.config.input_size, self._model.config.num_landmarks)
        self._traced = None
        self.trace_error = ''
        if torchscript:
            try:
                self._traced = traced_logits(self._model, self.input_size, self.num_landmarks, self._device)
            except (RuntimeError, TypeError, ValueError) as error:
                self.trace_error = str(error)

    @property
    def torchscript(self) -> bool:
        return self._traced is not None

    @property
    def runtime(self) -> str:
        """How predict() runs: 'torchscript' or 'eager'."""
        return 'torchscript' if self._traced is not None else 'eager'

    @property
    def device(self):
        return self._device

    @property
    def uses_landmarks(self):
        """True when predict() needs landmarks (the model has a GCN branch)."""
        return self._model.uses_landmarks

    @property
    def model(self):
        return self._model

    def for_gradients(self):
        """A classifier whose :attr:`model` gives gradients: this one."""
        return self

    @torch.no_grad()
    def predict(self, crops, landmarks=None):
        """Class probabilities float32 [N, C] in one batched forward pass.

        ``crops``: uint8 [N, S, S] gray crops from :func:`align_face`.
        ``landmarks``: float [N, 468, 3] *crop-normalised* (as align_face
        returns); required when :attr:`uses_landmarks`, ignored otherwise.
        """
        crops = self._checked_crops(crops)
        if len(crops) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        images = torch.from_numpy(crops.astype(np.float32) / 255.0)[:, None].to(self._device)
        points = None
        if self.uses_landmarks:
            if landmarks is None:
                raise ValueError(f'model {self.name} needs landmarks')
            points = torch.as_tensor(np.asarray(landmarks, np.float32), device=self._device)
            if points.shape != (len(crops), self.num_landmarks, 3):
                raise ValueError(f'landmarks must be [{len(crops)}, {self.num_landmarks}, 3], '
                                 f'got {tuple(points.shape)}')
        if self._traced is not None:
            if points is None:  # the traced graph takes landmarks; a model without a GCN ignores them
                points = torch.zeros(len(crops), self.num_landmarks, 3, device=self._device)
            logits = self._traced(images, points)
        else:
            logits = self._model(images, points).logits
        return torch.softmax(logits.float(), dim=1).cpu().numpy()
