"""CNN-SE-GCN by late fusion: a pixel CNN-SE branch and a face-mesh CNN-SE-GCN branch, probabilities averaged.

The two branches see a face differently: the pixel branch (SE-ResNet18 on the
aligned crop, :class:`~fer_ros.model.cnn_se_gcn.CNNSEGCN`) learns its own
features from FER-2013; the face-mesh branch
(:class:`~fer_ros.model.face_mesh_cnn_se_gcn.FaceMeshCNNSEGCN`) reads
MediaPipe's face-pretrained maps and the landmark graph. Their errors differ,
so their mean is more accurate than either (FER-2013 PublicTest: 69.16% and
64.81% alone, 70.41% fused). Each branch is trained on its own; fusing them
trains nothing (``fer-fuse``).

Inputs are those of both branches: aligned gray crops [B, 1, 48, 48] in [0, 1]
and crop-normalised landmarks [B, 468, 3].
"""
from dataclasses import dataclass, field

import torch
from torch import nn

from fer_ros.model.cnn_se_gcn import CNNSEGCN, CNNSEGCNConfig, CNNSEGCNOutput
from fer_ros.model.config import ConfigDict
from fer_ros.model.face_mesh_cnn_se_gcn import FaceMeshCNNSEGCN, FaceMeshCNNSEGCNConfig

ARCHITECTURE = 'cnn_se_gcn_fused'


@dataclass
class FusedCNNSEGCNConfig(ConfigDict):
    """The two branches' configs (as their checkpoints store them) and the pixel branch's share of the mean."""
    pixel: dict = field(default_factory=lambda: CNNSEGCNConfig(use_gcn=False, landmark_head=False).to_dict())
    mesh: dict = field(default_factory=lambda: FaceMeshCNNSEGCNConfig(landmark_head=False).to_dict())
    pixel_weight: float = 0.5

    def __post_init__(self):
        self.pixel, self.mesh = dict(self.pixel), dict(self.mesh)
        if not 0.0 <= self.pixel_weight <= 1.0:
            raise ValueError(f'pixel_weight must be in [0, 1], got {self.pixel_weight}')
        pixel, mesh = self.pixel_config, self.mesh_config
        shared = ('num_classes', 'input_size', 'num_landmarks')
        if any(getattr(pixel, key) != getattr(mesh, key) for key in shared):
            raise ValueError(f'the branches differ in {shared}: {[getattr(pixel, k) for k in shared]} '
                             f'vs {[getattr(mesh, k) for k in shared]}')

    @property
    def pixel_config(self) -> CNNSEGCNConfig:
        return CNNSEGCNConfig.from_dict(self.pixel)

    @property
    def mesh_config(self) -> FaceMeshCNNSEGCNConfig:
        return FaceMeshCNNSEGCNConfig.from_dict(self.mesh)

    @property
    def num_classes(self) -> int:
        return self.pixel_config.num_classes

    @property
    def input_size(self) -> int:
        return self.pixel_config.input_size

    @property
    def num_landmarks(self) -> int:
        return self.pixel_config.num_landmarks


class FusedCNNSEGCN(nn.Module):
    """forward(image, landmarks) like CNNSEGCN; ``logits`` are the log of the fused probabilities."""

    architecture = ARCHITECTURE

    def __init__(self, config=None):
        super().__init__()
        self.config = config or FusedCNNSEGCNConfig()
        self.pixel = CNNSEGCN(self.config.pixel_config)
        self.mesh = FaceMeshCNNSEGCN(self.config.mesh_config)

    @property
    def uses_landmarks(self):
        return self.pixel.uses_landmarks or self.mesh.uses_landmarks

    def forward(self, image, landmarks=None):
        pixel = self.pixel(image, landmarks if self.pixel.uses_landmarks else None)
        mesh = self.mesh(image, landmarks)
        weight = self.config.pixel_weight
        probabilities = (weight * torch.softmax(pixel.logits.float(), dim=1)
                         + (1.0 - weight) * torch.softmax(mesh.logits.float(), dim=1))
        logits = torch.log(probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny))
        return CNNSEGCNOutput(logits, torch.cat([pixel.fused, mesh.fused], dim=1), mesh.geometry, None)
