"""Baseline architectures that fer_ros can train, ship and switch to beside CNN-SE-GCN.

* ``efficientnet_b2``: torchvision's EfficientNet-B2 (random initialisation: no
  ImageNet weights can be downloaded here) with a grayscale stride-1 stem for
  48x48 crops, so its seven stages end on a 3x3 map instead of 1x1.
* ``pcnn``: a perception CNN. Five sub-networks look at patches around both
  eyes, both cheeks and the mouth, located from the face-mesh landmarks, and
  a sixth at the whole face. A multi-domain interaction module registers the
  local features against the global feature map (each local token attends to
  the global positions) and fuses both; a decoder reconstructs the face from
  the fused features for the second loss phase.

Both take the same inputs as CNN-SE-GCN (``image`` [B, 1, S, S] in [0, 1],
``landmarks`` [B, N, 3] crop-normalised) and return a :class:`BaselineOutput`.
"""

from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import efficientnet_b2
from torchvision.models.efficientnet import MBConv

from fer_ros.model.config import ConfigDict
from fer_ros.model.landmark_graph import NUM_LANDMARKS

# Face-mesh landmark indices whose mean locates each PCNN region (MediaPipe
# canonical mesh; "left" is the subject's left, on the image's right).
PCNN_REGIONS = {
    'right_eye': (33, 133, 159, 145, 160, 144),
    'left_eye': (362, 263, 386, 374, 387, 373),
    'right_cheek': (50, 101, 205, 187, 117),
    'left_cheek': (280, 330, 425, 411, 346),
    'mouth': (13, 14, 61, 291, 0, 17),
}


class BaselineOutput(NamedTuple):
    logits: torch.Tensor                        # [B, num_classes]
    fused: torch.Tensor                         # [B, features]
    landmarks: Optional[torch.Tensor] = None    # no landmark head in the baselines
    reconstruction: Optional[torch.Tensor] = None  # PCNN: [B, 1, S, S] in [0, 1]


@dataclass
class EfficientNetFERConfig(ConfigDict):
    num_classes: int = 7
    input_size: int = 48
    in_channels: int = 1
    num_landmarks: int = NUM_LANDMARKS
    stem_stride: int = 1
    dropout: float = 0.3
    stochastic_depth: float = 0.2
    image_mean: float = 0.5077
    image_std: float = 0.2550
    needs_landmarks = False  # class attribute, not a config field


class EfficientNetFER(nn.Module):
    architecture = 'efficientnet_b2'
    uses_landmarks = False

    def __init__(self, config=None):
        super().__init__()
        self.config = cfg = config or EfficientNetFERConfig()
        self.register_buffer('image_mean', torch.tensor(cfg.image_mean), persistent=False)
        self.register_buffer('image_std', torch.tensor(cfg.image_std), persistent=False)
        network = efficientnet_b2(weights=None, num_classes=cfg.num_classes, dropout=cfg.dropout,
                                  stochastic_depth_prob=cfg.stochastic_depth)
        stem = network.features[0][0]
        network.features[0][0] = nn.Conv2d(cfg.in_channels, stem.out_channels, 3, cfg.stem_stride, 1, bias=False)
        self.features, self.pool = network.features, network.avgpool
        self.dropout, self.classifier = network.classifier[0], network.classifier[1]
        # torchvision scales the head's init by 1/sqrt(num_classes), made for 1000 classes: with 7 the
        # initial logits are large (loss about 4 instead of ln 7). Scale by the fan-in instead.
        bound = self.classifier.in_features ** -0.5
        nn.init.uniform_(self.classifier.weight, -bound, bound)
        nn.init.zeros_(self.classifier.bias)
        # Each residual block starts as the identity (its last BatchNorm scale at zero, as timm does):
        # from random weights the network then learns much sooner (model card efficientnet_b2_fer2013.md).
        for block in self.features.modules():
            if isinstance(block, MBConv) and block.use_res_connect:
                nn.init.zeros_(block.block[-1][1].weight)

    def forward(self, image, landmarks=None):
        features = self.pool(self.features((image - self.image_mean) / self.image_std)).flatten(1)
        return BaselineOutput(self.classifier(self.dropout(features)), features)


@dataclass
class PCNNConfig(ConfigDict):
    num_classes: int = 7
    input_size: int = 48
    in_channels: int = 1
    num_landmarks: int = NUM_LANDMARKS
    region_size: int = 16         # patch pixels
    region_scale: float = 0.3     # patch side as a fraction of the crop
    local_widths: tuple = (32, 64)
    global_widths: tuple = (32, 64, 128)
    feature_dim: int = 128
    heads: int = 4
    dropout: float = 0.3
    reconstruction: bool = True
    image_mean: float = 0.5077
    image_std: float = 0.2550
    needs_landmarks = True  # class attribute, not a config field


def _conv_stack(in_channels, widths):
    """conv-BN-ReLU x2 then max-pool, per width."""
    layers = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                   nn.ReLU(inplace=True), nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                   nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        in_channels = width
    return nn.Sequential(*layers)


class RegionSampler(nn.Module):
    """Square patches centred on landmark groups, cut with grid_sample (batched, differentiable)."""

    def __init__(self, regions, size, scale):
        super().__init__()
        for name, indices in regions.items():
            self.register_buffer(f'{name}_indices', torch.tensor(indices), persistent=False)
        self.names, self.size, self.scale = list(regions), size, scale

    def forward(self, image, landmarks):
        batch = image.shape[0]
        centres = torch.stack([landmarks[:, getattr(self, f'{n}_indices'), :2].mean(dim=1) for n in self.names], 1)
        theta = image.new_zeros(batch, len(self.names), 2, 3)
        theta[..., 0, 0] = theta[..., 1, 1] = self.scale
        theta[..., :, 2] = centres.to(image.dtype) * 2 - 1  # [0, 1] crop coordinates -> [-1, 1]
        grid = F.affine_grid(theta.flatten(0, 1), [batch * len(self.names), 1, self.size, self.size],
                             align_corners=False)
        repeated = image.repeat_interleave(len(self.names), dim=0)
        patches = F.grid_sample(repeated, grid, padding_mode='border', align_corners=False)
        return patches.view(batch, len(self.names), image.shape[1], self.size, self.size)


class MultiDomainInteraction(nn.Module):
    """Local region tokens attend to the global feature map (registration), then both are fused."""

    def __init__(self, dim, heads, dropout):
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.fuse = nn.Sequential(nn.Linear(2 * dim, dim), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
                                  nn.Dropout(dropout))

    def forward(self, local_tokens, global_map):
        global_tokens = global_map.flatten(2).transpose(1, 2)          # [B, HW, D]
        registered, _ = self.attention(local_tokens, global_tokens, global_tokens)
        local = self.norm(local_tokens + registered).mean(dim=1)       # [B, D]
        return self.fuse(torch.cat([local, global_tokens.mean(dim=1)], dim=1))


class FaceDecoder(nn.Module):
    """Fused features -> the face image [B, 1, S, S] (the reconstruction phase)."""

    def __init__(self, dim, size, channels=64):
        super().__init__()
        self.start, self.channels = size // 8, channels
        self.project = nn.Linear(dim, channels * self.start * self.start)
        layers = []
        for _ in range(3):
            layers += [nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1), nn.BatchNorm2d(channels // 2),
                       nn.ReLU(inplace=True)]
            channels //= 2
        self.upsample = nn.Sequential(*layers, nn.Conv2d(channels, 1, 3, padding=1), nn.Sigmoid())

    def forward(self, fused):
        return self.upsample(self.project(fused).view(-1, self.channels, self.start, self.start))


class PCNN(nn.Module):
    architecture = 'pcnn'
    uses_landmarks = True

    def __init__(self, config=None):
        super().__init__()
        self.config = cfg = config or PCNNConfig()
        if cfg.input_size % 8:
            raise ValueError(f'PCNN input_size must be a multiple of 8, got {cfg.input_size}')
        self.register_buffer('image_mean', torch.tensor(cfg.image_mean), persistent=False)
        self.register_buffer('image_std', torch.tensor(cfg.image_std), persistent=False)
        self.regions = RegionSampler(PCNN_REGIONS, cfg.region_size, cfg.region_scale)
        self.local_networks = nn.ModuleList(
            nn.Sequential(_conv_stack(cfg.in_channels, cfg.local_widths), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(cfg.local_widths[-1], cfg.feature_dim)) for _ in PCNN_REGIONS)
        self.global_network = nn.Sequential(_conv_stack(cfg.in_channels, cfg.global_widths),
                                            nn.Conv2d(cfg.global_widths[-1], cfg.feature_dim, 1))
        self.interaction = MultiDomainInteraction(cfg.feature_dim, cfg.heads, cfg.dropout)
        self.classifier = nn.Linear(cfg.feature_dim, cfg.num_classes)
        self.decoder = FaceDecoder(cfg.feature_dim, cfg.input_size) if cfg.reconstruction else None

    def forward(self, image, landmarks=None):
        if landmarks is None:
            raise ValueError('PCNN locates its regions from landmarks; none were given')
        normalised = (image - self.image_mean) / self.image_std
        patches = self.regions(normalised, landmarks)
        local_tokens = torch.stack([network(patches[:, index]) for index, network in enumerate(self.local_networks)],
                                   dim=1)
        fused = self.interaction(local_tokens, self.global_network(normalised))
        reconstruction = self.decoder(fused) if self.decoder is not None else None
        return BaselineOutput(self.classifier(fused), fused, None, reconstruction)
