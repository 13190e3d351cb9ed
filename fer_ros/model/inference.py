"""Face alignment and batched expression classification (no ROS imports).

:func:`align_face` is used identically when preparing training data and at
inference, so the model always sees the same framing.
"""
import math
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from fer_ros.model.checkpoint import ModelLoadError, load_model
from fer_ros.model.face_mesh_cnn_se_gcn import FaceMeshCNNSEGCN
from fer_ros.model.litert_face_mesh import LiteRTLogits, LiteRTUnavailable
from fer_ros.model.tracing import frozen_trace

# Eye corners of the MediaPipe face mesh, image-left eye then image-right eye.
LEFT_EYE_CORNERS = (33, 133)
RIGHT_EYE_CORNERS = (263, 362)
# Crop side / landmark bounding-box side, and the crop centre's upward shift
# from the box centre (fraction of the side): both measured on FER-2013 crops
# (mesh box 39 x 43 px in a 48 px crop, box centre 4.7 % below crop centre).
FACE_SCALE = 1.12
VERTICAL_OFFSET = 0.047
WARP_OVERSAMPLING = 4


def alignment_matrix(landmarks_px, output_size=48):
    """The 2x3 affine from image pixels to the oversampled work square of :func:`align_face`.

    The face is rotated about the eye midpoint so the eye-corner centres
    (landmarks 33/133 and 263/362) are level; the crop is the square of side
    ``FACE_SCALE`` x the larger side of the rotated landmarks' bounding box,
    centred on that box shifted up by ``VERTICAL_OFFSET`` x side. Returns
    (matrix float64 [2, 3], scale from image pixels to work pixels).
    """
    points = np.asarray(landmarks_px, dtype=np.float64)
    left_eye = points[list(LEFT_EYE_CORNERS), :2].mean(axis=0)
    right_eye = points[list(RIGHT_EYE_CORNERS), :2].mean(axis=0)
    eye_centre = (left_eye + right_eye) / 2
    dx, dy = right_eye - left_eye
    angle = math.atan2(dy, dx)
    rotation = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    rotated = (points[:, :2] - eye_centre) @ rotation.T
    low, high = rotated.min(axis=0), rotated.max(axis=0)
    side = max(FACE_SCALE * float((high - low).max()), 1.0)
    crop_centre = (low + high) / 2 - np.array([0.0, VERTICAL_OFFSET * side])
    work_size = output_size * WARP_OVERSAMPLING
    scale = work_size / side
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = -scale * (rotation @ eye_centre + crop_centre) + work_size / 2
    return matrix, scale


def warp_face(gray, matrix, output_size=48):
    """uint8 gray crop [S, S]: ``gray`` warped by an :func:`alignment_matrix`, border replicated,
    then area-averaged down from the oversampled work square."""
    work_size = output_size * WARP_OVERSAMPLING
    warped = cv2.warpAffine(gray, matrix, (work_size, work_size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(warped, (output_size, output_size), interpolation=cv2.INTER_AREA)


def align_face(image, landmarks_px, output_size=48):
    """Similarity-align a face into a square crop like FER-2013's framing (:func:`alignment_matrix`).

    ``image``: uint8 gray [H, W] or BGR [H, W, 3]. ``landmarks_px``: [468, 3]
    MediaPipe landmarks in image pixels (x, y; z in the same pixel scale,
    i.e. MediaPipe's normalised z times the image width). Pixels outside the
    image replicate the border. Returns (crop uint8 [S, S] gray, landmarks
    float32 [468, 3] crop-normalised: x, y in [0, 1] of the crop, z divided by
    the crop side).
    """
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    points = np.asarray(landmarks_px, dtype=np.float64)
    matrix, scale = alignment_matrix(points, output_size)
    crop = warp_face(gray, matrix, output_size)
    work_size = output_size * WARP_OVERSAMPLING
    aligned = np.empty_like(points)
    work_xy = points[:, :2] @ matrix[:, :2].T + matrix[:, 2]
    # INTER_AREA: output pixel j averages work pixels F*j .. F*j + F - 1.
    aligned[:, :2] = (work_xy - (WARP_OVERSAMPLING - 1) / 2) / WARP_OVERSAMPLING / output_size
    aligned[:, 2] = points[:, 2] * scale / work_size
    return crop, aligned.astype(np.float32)


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
    eagerly and :attr:`trace_error` says why. ``litert``: on a CPU, run the
    frozen face mesh part of a face-mesh model (the default model) with LiteRT
    (:mod:`fer_ros.model.litert_face_mesh`; logits equal within 1e-4, checked
    at load); other models and devices ignore it, and :attr:`litert_error`
    says why it could not be used. :attr:`model` stays the eager PyTorch one
    (the self-check needs its gradients).
    """

    def __init__(self, model_path, device='auto', name=None, torchscript=False, litert=False):
        self._device = resolve_device(device)
        self._model, self._metadata = load_model(model_path, self._device)
        self._name = name or Path(model_path).with_suffix('').name
        self._traced = self._litert = None
        self.trace_error = self.litert_error = ''
        if litert and self._device.type == 'cpu' and isinstance(self._model, FaceMeshCNNSEGCN):
            try:
                self._litert = LiteRTLogits(self._model, torch.get_num_threads(), torchscript)
            except (LiteRTUnavailable, RuntimeError, ValueError) as error:
                self.litert_error = str(error)
        if torchscript and self._litert is None:
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
        """How predict() runs: 'litert' (face mesh on LiteRT, head in PyTorch), 'torchscript' or 'eager'."""
        return 'litert' if self._litert is not None else 'torchscript' if self._traced is not None else 'eager'

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
        if self._litert is not None:
            if points is None:  # the head's trace takes landmarks; a model without a GCN ignores them
                points = torch.zeros(len(crops), self._model.config.num_landmarks, 3)
            logits = self._litert(images, points)
        elif self._traced is not None:
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
