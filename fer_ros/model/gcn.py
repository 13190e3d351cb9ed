"""Graph convolution branch over the face mesh (Kipf & Welling GCN)."""
import warnings

import torch
from torch import nn

from fer_ros.model.landmark_graph import normalize_face_geometry, normalized_adjacency_csr


class GraphConv(nn.Module):
    """``H' = A_hat H W + b`` for a batch of node features [B, N, F]; ``propagate`` multiplies by ``A_hat``."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, nodes, propagate):
        return propagate(self.linear(nodes)) + self.bias


class GraphBlock(nn.Module):
    """GraphConv -> LayerNorm -> ReLU, with a residual when widths match."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.conv = GraphConv(in_features, out_features)
        self.norm = nn.LayerNorm(out_features)
        self.act = nn.ReLU(inplace=True)
        self.residual = in_features == out_features

    def forward(self, nodes, propagate):
        out = self.act(self.norm(self.conv(nodes, propagate)))
        return out + nodes if self.residual else out


class LandmarkGCN(nn.Module):
    """Face-mesh landmarks [B, 468, 3] -> geometric embedding [B, out_features].

    Node features are the per-face normalised coordinates
    (:func:`normalize_face_geometry`), followed by ``extra_features`` more per
    node when given (e.g. appearance sampled at each landmark); mean and max
    pooling over nodes are concatenated and projected. Runs in float32 (sparse
    CSR matmul has no half-precision kernels), also under autocast.
    """

    def __init__(self, widths=(64, 64, 128), out_features=128, extra_features=0):
        super().__init__()
        adjacency = normalized_adjacency_csr()
        # CSR parts as dense buffers: they follow .to(device) and are DDP-safe.
        self.register_buffer('crow_indices', adjacency.crow_indices(), persistent=False)
        self.register_buffer('col_indices', adjacency.col_indices(), persistent=False)
        self.register_buffer('adjacency_values', adjacency.values(), persistent=False)
        self.num_nodes = adjacency.shape[0]
        # The same matrix dense, for ONNX export (no sparse tensors there; one MatMul runs fast).
        self.register_buffer('dense_adjacency', adjacency.to_dense(), persistent=False)
        in_widths = (3 + extra_features,) + tuple(widths[:-1])
        self.blocks = nn.ModuleList(GraphBlock(i, o) for i, o in zip(in_widths, widths))
        self.project = nn.Linear(2 * widths[-1], out_features)
        self.out_features = out_features

    def adjacency(self):
        """The normalised adjacency as a sparse CSR tensor on the buffers' device."""
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='Sparse CSR tensor support is in beta')
            return torch.sparse_csr_tensor(self.crow_indices, self.col_indices, self.adjacency_values,
                                           (self.num_nodes, self.num_nodes), check_invariants=False)

    def propagate(self, nodes):
        """``A_hat @ nodes`` for node features [B, N, F]: sparse, or dense while exporting to ONNX."""
        if torch.onnx.is_in_onnx_export():
            return self.dense_adjacency @ nodes
        batch, num_nodes, features = nodes.shape
        stacked = nodes.transpose(0, 1).reshape(num_nodes, batch * features)
        return (self.adjacency() @ stacked).reshape(num_nodes, batch, features).transpose(0, 1)

    def forward(self, landmarks, extra=None):
        """landmarks [B, N, 3] (and extra [B, N, extra_features]) -> [B, out_features]."""
        with torch.autocast(device_type=landmarks.device.type, enabled=False):
            nodes = normalize_face_geometry(landmarks.float())
            if extra is not None:
                nodes = torch.cat([nodes, extra.float()], dim=-1)
            for block in self.blocks:
                nodes = block(nodes, self.propagate)
            pooled = torch.cat([nodes.mean(dim=1), nodes.amax(dim=1)], dim=1)
            return self.project(pooled)
