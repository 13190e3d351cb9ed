"""CNN-SE-GCN on face-pretrained features: MediaPipe's face mesh network as the CNN backbone.

Inputs are those of :class:`fer_ros.model.cnn_se_gcn.CNNSEGCN` (aligned gray
crops [B, 1, 48, 48] in [0, 1] and crop-normalised landmarks [B, 468, 3]), so
the node feeds it exactly what training saw. Inside:

* a frozen trunk (:class:`FaceMeshTrunk`): the face mesh graph from the
  crop (upscaled to 192 px) to its ``cached_stage`` (24 px, 64 channels, by
  default; 48 px, 32 channels, to fine-tune one more stage);
* :class:`FaceMeshHead`, everything that is trained, on the trunk's output
  (the feature cache stores it, so training needs no trunk pass):

  - the graph's stages after the cached one (12 px and 6 px; with a 48 px
    cache also 24 px), frozen or fine-tuned (``tune_stages``; initialised
    from the graph);
  - the CNN branch: per stage (24, 12, 6 px) average pooling to a
    ``spatial_pool`` x ``spatial_pool`` grid and Squeeze-and-Excitation over
    its channels (gated by the grid's mean), concatenated, standardised
    (BatchNorm) and dropped out;
  - the GCN branch over the 468-point mesh: node features are the
    normalised coordinates plus, with ``landmark_appearance``, the 24 and
    12 px maps sampled (bilinear) at each landmark and projected;
  - fusion, classifier and the landmark-reconstruction head of CNNSEGCN
    (computed in training mode only: it feeds the geometric losses).
"""
from dataclasses import dataclass

import torch
from torch import nn

from fer_ros.model.cnn_se_gcn import CNNSEGCNOutput, FusionHead, LandmarkHead
from fer_ros.model.config import ConfigDict
from fer_ros.model.face_mesh_features import STAGE_TENSORS, FaceMeshTrunk, load_face_mesh_graph, stage_section
from fer_ros.model.gcn import LandmarkGCN
from fer_ros.model.landmark_graph import NUM_LANDMARKS
from fer_ros.model.se_resnet import SqueezeExcite

ARCHITECTURE = 'cnn_se_gcn_facemesh'
STAGES = ('48px', '24px', '12px', '6px')
POOLED_STAGES = ('24px', '12px', '6px')   # the CNN branch reads these maps
SAMPLED_STAGES = ('24px', '12px')         # the GCN's node features sample these at the landmarks


def stage_side(stage: str) -> int:
    """A stage's map side in pixels ('12px' -> 12)."""
    return int(stage.removesuffix('px'))


@dataclass
class FaceMeshCNNSEGCNConfig(ConfigDict):
    """Architecture hyper-parameters; stored in every checkpoint's JSON."""
    num_classes: int = 7
    input_size: int = 48
    num_landmarks: int = NUM_LANDMARKS
    pretrained: bool = True          # face mesh weights (False: the same graph, random weights; ablation)
    cached_stage: str = '24px'       # the trunk's (and the feature cache's) last stage: '24px' or '48px'
    tune_stages: bool = False        # fine-tune the stages after cached_stage (False: frozen)
    use_se: bool = True
    spatial_pool: int = 4
    feature_dropout: float = 0.5     # on the concatenated, standardised CNN features
    use_gcn: bool = True
    landmark_appearance: bool = True
    appearance_dim: int = 16
    gcn_widths: tuple = (32, 32, 64)
    geometry_dim: int = 128
    landmark_head: bool = True
    fusion_dim: int = 512
    dropout: float = 0.5

    @property
    def needs_landmarks(self):
        return self.use_gcn or self.landmark_head


class GridAveragePool(nn.Module):
    """``nn.AdaptiveAvgPool2d(grid)`` for square maps of side ``size``, as two products with a fixed
    averaging matrix: the same values, and exportable to ONNX when ``grid`` does not divide ``size``."""

    def __init__(self, size: int, grid: int):
        super().__init__()
        weights = torch.zeros(grid, size)
        for row in range(grid):  # PyTorch's adaptive bins: floor(i S / G) .. ceil((i + 1) S / G)
            start, end = row * size // grid, -(-(row + 1) * size // grid)
            weights[row, start:end] = 1.0 / (end - start)
        self.register_buffer('weights', weights, persistent=False)

    def forward(self, x):
        return self.weights @ x @ self.weights.T


class StagePool(nn.Module):
    """One stage's map -> average pool to a grid -> SE over channels -> flat vector."""

    def __init__(self, channels, size, grid, use_se):
        super().__init__()
        self.pool = GridAveragePool(size, grid)
        self.se = SqueezeExcite(channels) if use_se else nn.Identity()
        self.out_features = channels * grid * grid

    def forward(self, x):
        return self.se(self.pool(x)).flatten(1)


def sample_at_landmarks(feature_map, landmarks, crop_size):
    """Bilinear samples [B, N, C] of a map [B, C, h, w] covering the crop at crop-normalised landmarks.

    Landmark x = i / S is the centre of crop pixel i (OpenCV convention), i.e. at
    (x + 0.5 / S) of the crop's extent; map cell j covers (j .. j + 1) / w of it.
    Positions beyond the outer cell centres take the border cells (``grid_sample``
    with ``padding_mode='border'``, ``align_corners=False``), written as gathers,
    which run faster than ONNX Runtime's GridSample.
    """
    batch, channels, height, width = feature_map.shape
    x = ((landmarks[..., 0] + 0.5 / crop_size) * width - 0.5).clamp(0, width - 1)
    y = ((landmarks[..., 1] + 0.5 / crop_size) * height - 0.5).clamp(0, height - 1)
    x0, y0 = x.floor(), y.floor()
    wx, wy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=width - 1), (y0 + 1).clamp(max=height - 1)
    # The four neighbouring cells of each landmark as rows of the batch's [B * h * w, C] cells.
    offsets = (torch.arange(batch, device=feature_map.device) * (height * width))[:, None, None]
    corners = torch.stack([y0 * width + x0, y0 * width + x1, y1 * width + x0, y1 * width + x1], dim=-1)
    weights = torch.stack([(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx], dim=-1)
    cells = feature_map.float().flatten(2).transpose(1, 2).reshape(batch * height * width, channels)
    return (cells[corners + offsets] * weights[..., None]).sum(dim=2)


class FaceMeshHead(nn.Module):
    """Everything trained: cached 24 px trunk features [B, 64, 24, 24] (+ landmarks) -> CNNSEGCNOutput."""

    input_bounds = None  # feature maps are unbounded (FGSM on them is not clamped)

    def __init__(self, config, graph):
        super().__init__()
        cfg = self.config = config
        if cfg.cached_stage not in STAGES[:2]:
            raise ValueError(f'cached_stage must be 48px or 24px, got {cfg.cached_stage!r}')
        self.map_stages = STAGES[STAGES.index(cfg.cached_stage):]
        self.stages = nn.ModuleList(
            stage_section(graph, start, end, trainable=cfg.tune_stages, reinitialise=not cfg.pretrained)
            for start, end in zip(self.map_stages, self.map_stages[1:]))
        channels = [STAGE_TENSORS[stage][1] for stage in POOLED_STAGES]
        self.pools = nn.ModuleList(StagePool(c, stage_side(stage), cfg.spatial_pool, cfg.use_se)
                                   for c, stage in zip(channels, POOLED_STAGES))
        cnn_features = sum(pool.out_features for pool in self.pools)
        self.standardise = nn.BatchNorm1d(cnn_features)
        self.feature_dropout = nn.Dropout(cfg.feature_dropout)
        self.appearance = None
        if cfg.use_gcn and cfg.landmark_appearance:
            self.appearance = nn.Sequential(nn.Linear(channels[0] + channels[1], cfg.appearance_dim),
                                            nn.LayerNorm(cfg.appearance_dim), nn.ReLU(inplace=True))
        extra = cfg.appearance_dim if self.appearance is not None else 0
        self.gcn = LandmarkGCN(cfg.gcn_widths, cfg.geometry_dim, extra_features=extra) if cfg.use_gcn else None
        self.fusion = FusionHead(cnn_features + (cfg.geometry_dim if cfg.use_gcn else 0), cfg.fusion_dim,
                                 cfg.dropout)
        self.classifier = nn.Linear(cfg.fusion_dim, cfg.num_classes)
        self.landmark_head = LandmarkHead(cfg.fusion_dim, cfg.num_landmarks) if cfg.landmark_head else None

    @property
    def uses_landmarks(self):
        return self.gcn is not None

    @property
    def frozen_graph_stages(self) -> bool:
        """True when the stages after the cached one are the graph's own (pretrained, not fine-tuned), so
        any runner of the face mesh graph (LiteRT) can supply their maps."""
        return self.config.pretrained and not self.config.tune_stages

    def appearance_at_landmarks(self, maps, landmarks):
        """The GCN's appearance node features [B, N, appearance_dim]: the stage maps sampled at the
        landmarks, concatenated, through ``appearance`` (Linear, LayerNorm, ReLU). The linear layer is
        applied to the maps before sampling (both are linear, so the result is the same) and the
        samples are read from appearance_dim channels instead of 192: a third of the head's time."""
        linear, rest = self.appearance[0], self.appearance[1:]
        weights = linear.weight.split([stage_map.shape[1] for stage_map in maps], dim=1)
        projected = sum(sample_at_landmarks(torch.einsum('dc,bchw->bdhw', weight, stage_map.float()),
                                            landmarks, self.config.input_size)
                        for weight, stage_map in zip(weights, maps))
        return rest(projected + linear.bias)

    def forward(self, features, landmarks=None, stage_maps=None):
        """``features``: the cached stage's map; ``stage_maps``: the later stages' maps (``map_stages[1:]``
        order) when computed elsewhere, for :attr:`frozen_graph_stages` heads only."""
        maps = [features.float()]
        if stage_maps is None:
            for stage in self.stages:
                maps.append(stage(maps[-1]))
        elif self.frozen_graph_stages and len(stage_maps) == len(self.stages):
            maps.extend(stage_map.float() for stage_map in stage_maps)
        else:
            raise ValueError(f'stage_maps: expected {len(self.stages)} maps of frozen graph stages, got '
                             f'{len(stage_maps)} (tune_stages={self.config.tune_stages}, '
                             f'pretrained={self.config.pretrained})')
        by_stage = dict(zip(self.map_stages, maps))
        pooled = torch.cat([pool(by_stage[stage]) for pool, stage in zip(self.pools, POOLED_STAGES)], dim=1)
        parts = [self.feature_dropout(self.standardise(pooled))]
        geometry = None
        if self.gcn is not None:
            if landmarks is None:
                raise ValueError('this model uses landmarks (use_gcn=True) but none were given')
            extra = None
            if self.appearance is not None:
                extra = self.appearance_at_landmarks([by_stage[stage] for stage in SAMPLED_STAGES], landmarks)
            geometry = self.gcn(landmarks, extra)
            parts.append(geometry.to(parts[0].dtype))
        fused = self.fusion(torch.cat(parts, dim=1))
        # The reconstruction only feeds training losses: skipped in eval mode (0.4 ms of a face at batch 1).
        reconstructed = self.landmark_head(fused) if self.landmark_head is not None and self.training else None
        return CNNSEGCNOutput(self.classifier(fused), fused, geometry, reconstructed)


class FaceMeshCNNSEGCN(nn.Module):
    """Frozen face mesh trunk + trained :class:`FaceMeshHead`; forward(image, landmarks) like CNNSEGCN."""

    architecture = ARCHITECTURE

    def __init__(self, config=None):
        super().__init__()
        self.config = config or FaceMeshCNNSEGCNConfig()
        graph = load_face_mesh_graph()
        self.trunk = FaceMeshTrunk(self.config.cached_stage, pretrained=self.config.pretrained, graph=graph)
        self.head = FaceMeshHead(self.config, graph)

    @property
    def uses_landmarks(self):
        return self.head.uses_landmarks

    def forward(self, image, landmarks=None):
        if image.shape[-2:] != (self.config.input_size,) * 2:
            raise ValueError(f'expected {self.config.input_size}x{self.config.input_size} images, '
                             f'got {tuple(image.shape[-2:])}')
        return self.head(self.trunk(image), landmarks)
