"""CNN-SE-GCN: SE-ResNet18 appearance features fused with a face-mesh GCN.

Inputs: ``image`` [B, 1, 48, 48] float in [0, 1] (standardised inside the
model) and ``landmarks`` [B, 468, 3] crop-normalised (x, y in [0, 1] of the
crop, z in crop widths, as :func:`fer_ros.vision.alignment.align_face` returns).
"""
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
from torch import nn

from fer_ros.model.config import ConfigDict
from fer_ros.model.gcn import LandmarkGCN
from fer_ros.model.landmark_graph import NUM_LANDMARKS, normalize_face_geometry
from fer_ros.model.se_resnet import SEResNet

ARCHITECTURE = 'cnn_se_gcn'


@dataclass
class CNNSEGCNConfig(ConfigDict):
    """Architecture hyper-parameters; stored in every checkpoint's JSON."""
    num_classes: int = 7
    input_size: int = 48
    in_channels: int = 1
    num_landmarks: int = NUM_LANDMARKS
    use_se: bool = True
    use_gcn: bool = True
    landmark_head: bool = True
    cnn_blocks: tuple = (2, 2, 2, 2)
    cnn_widths: tuple = (64, 128, 256, 512)
    se_ratio: float = 1 / 16
    stem_stride: int = 1          # 2: every stage on half-size maps (a quarter of the multiply-adds)
    gcn_widths: tuple = (64, 64, 128)
    geometry_dim: int = 128
    fusion_dim: int = 256
    dropout: float = 0.3
    image_mean: float = 0.5077  # FER-2013 train pixel statistics in [0, 1]
    image_std: float = 0.2550

    def __post_init__(self):
        if self.stem_stride not in (1, 2):
            raise ValueError(f'stem_stride must be 1 or 2, got {self.stem_stride!r}')

    @property
    def needs_landmarks(self):
        return self.use_gcn or self.landmark_head


class CNNSEGCNOutput(NamedTuple):
    logits: torch.Tensor                 # [B, num_classes]
    fused: torch.Tensor                  # [B, fusion_dim]
    geometry: Optional[torch.Tensor]     # [B, geometry_dim] GCN embedding, None without GCN
    landmarks: Optional[torch.Tensor]    # [B, 468, 3] reconstructed normalised geometry, None without head


class FusionHead(nn.Module):
    """Concatenated features -> Linear -> BatchNorm -> ReLU -> Dropout."""

    def __init__(self, in_features, out_features, dropout):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_features, out_features), nn.BatchNorm1d(out_features),
                                    nn.ReLU(inplace=True), nn.Dropout(dropout))

    def forward(self, x):
        return self.layers(x)


class LandmarkHead(nn.Module):
    """Fused features -> per-face normalised landmark geometry [B, N, 3] (auxiliary task)."""

    def __init__(self, in_features, num_landmarks, hidden=256):
        super().__init__()
        self.num_landmarks = num_landmarks
        self.layers = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
                                    nn.Linear(hidden, num_landmarks * 3))

    def forward(self, fused):
        return self.layers(fused).view(-1, self.num_landmarks, 3)


class CNNSEGCN(nn.Module):
    """Facial-expression classifier; ``use_se``/``use_gcn`` switch the ablations."""

    architecture = ARCHITECTURE

    def __init__(self, config=None):
        super().__init__()
        self.config = config or CNNSEGCNConfig()
        cfg = self.config
        self.register_buffer('image_mean', torch.tensor(cfg.image_mean), persistent=False)
        self.register_buffer('image_std', torch.tensor(cfg.image_std), persistent=False)
        self.cnn = SEResNet(cfg.cnn_blocks, cfg.cnn_widths, cfg.in_channels, cfg.use_se, cfg.se_ratio,
                            cfg.stem_stride)
        self.gcn = LandmarkGCN(cfg.gcn_widths, cfg.geometry_dim) if cfg.use_gcn else None
        fused_in = self.cnn.out_features + (cfg.geometry_dim if cfg.use_gcn else 0)
        self.fusion = FusionHead(fused_in, cfg.fusion_dim, cfg.dropout)
        self.classifier = nn.Linear(cfg.fusion_dim, cfg.num_classes)
        self.landmark_head = LandmarkHead(cfg.fusion_dim, cfg.num_landmarks) if cfg.landmark_head else None

    @property
    def uses_landmarks(self):
        return self.gcn is not None

    def forward(self, image, landmarks=None):
        if image.shape[-2:] != (self.config.input_size,) * 2:
            raise ValueError(f'expected {self.config.input_size}x{self.config.input_size} images, '
                             f'got {tuple(image.shape[-2:])}')
        features = [self.cnn((image - self.image_mean) / self.image_std)]
        geometry = None
        if self.gcn is not None:
            if landmarks is None:
                raise ValueError('this model uses landmarks (use_gcn=True) but none were given')
            geometry = self.gcn(landmarks)
            features.append(geometry.to(features[0].dtype))
        fused = self.fusion(torch.cat(features, dim=1))
        reconstructed = self.landmark_head(fused) if self.landmark_head is not None else None
        return CNNSEGCNOutput(self.classifier(fused), fused, geometry, reconstructed)


class GeometryDiscriminator(nn.Module):
    """Tells real face geometry from the geometry the model reconstructs (GAN-style).

    Both inputs are landmark sets [B, N, 3]; each is per-face normalised
    (:func:`normalize_face_geometry`) and encoded by a *fixed* random
    Gaussian projection ``P`` [code_dim, 3N] (seeded, stored in the state dict)
    into a ``code_dim`` geometry code, which an MLP scores (a logit: real > 0).
    "Real" = code of the true landmarks; "generated" = code of the model's
    ``landmarks`` output. The fixed projection keeps real and generated codes
    in one space that the discriminator cannot reshape.
    """

    def __init__(self, num_landmarks=NUM_LANDMARKS, code_dim=128, hidden=256, seed=0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        projection = torch.randn(code_dim, num_landmarks * 3, generator=generator) / (num_landmarks * 3) ** 0.5
        self.register_buffer('projection', projection)
        self.layers = nn.Sequential(
            nn.Linear(code_dim, hidden), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden, 1))

    def encode(self, landmarks):
        """Geometry code [B, code_dim] of landmark sets [B, N, 3] (any position and scale)."""
        return normalize_face_geometry(landmarks.float()).flatten(1) @ self.projection.t()

    def forward(self, code):
        """Real/generated logit [B] of geometry codes [B, code_dim]."""
        return self.layers(code).squeeze(1)
