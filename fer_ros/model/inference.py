"""Batched expression classification with PyTorch (no ROS imports)."""
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fer_ros.model.checkpoint import ModelLoadError, load_model
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


class ExpressionClassifier:
    """A loaded checkpoint that classifies batches of aligned crops.

    ``name``: what results call the model; by default the name it was loaded
    as (the checkpoint file's stem), never a value read from the file.
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
        self._model, self._metadata = load_model(model_path, self._device)
        self._name = name or Path(model_path).with_suffix('').name
        self._traced = None
        self.trace_error = ''
        if torchscript:
            try:
                self._traced = traced_logits(self._model, self.input_size, self._model.config.num_landmarks,
                                             self._device)
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
    def labels(self):
        """Class names, in logit order."""
        return tuple(self._metadata['labels'])

    @property
    def name(self):
        return self._name

    @property
    def device(self):
        return self._device

    @property
    def metadata(self):
        return dict(self._metadata)

    @property
    def input_size(self):
        return self._model.config.input_size

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
        crops = np.asarray(crops)
        size = self.input_size
        if crops.ndim != 3 or crops.shape[1:] != (size, size):
            raise ValueError(f'crops must be [N, {size}, {size}], got {crops.shape}')
        if len(crops) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        images = torch.from_numpy(crops.astype(np.float32) / 255.0)[:, None].to(self._device)
        points = None
        if self.uses_landmarks:
            if landmarks is None:
                raise ValueError(f'model {self.name} needs landmarks')
            points = torch.as_tensor(np.asarray(landmarks, np.float32), device=self._device)
            if points.shape != (len(crops), self._model.config.num_landmarks, 3):
                raise ValueError(f'landmarks must be [{len(crops)}, {self._model.config.num_landmarks}, 3], '
                                 f'got {tuple(points.shape)}')
        if self._traced is not None:
            if points is None:  # the traced graph takes landmarks; a model without a GCN ignores them
                points = torch.zeros(len(crops), self._model.config.num_landmarks, 3, device=self._device)
            logits = self._traced(images, points)
        else:
            logits = self._model(images, points).logits
        return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def warm_up(self) -> None:
        """One forward pass on a blank face, so the first real face is not slowed by lazy initialisation;
        ModelLoadError when it does not answer finite probabilities."""
        size = self.input_size
        try:
            probabilities = self.predict(np.zeros((1, size, size), np.uint8),
                                         np.full((1, self._model.config.num_landmarks, 3), 0.5, np.float32))
        except RuntimeError as error:
            raise ModelLoadError(f'model {self.name!r} loads but cannot run: {error}') from error
        if not np.isfinite(probabilities).all():
            raise ModelLoadError(f'model {self.name!r} answers non-finite probabilities {probabilities[0]}')
