"""SE-ResNet18 feature extractor for 1-channel 48x48 face crops.

Layout follows torchvision's resnet.py (blocks as modules, a builder function,
weights loaded separately from the architecture); the squeeze-and-excitation
module follows timm's ``SEModule``. For 48x48 inputs the stem is a 3x3
stride-1 convolution without max-pooling, so the four stages see 48, 24, 12
and 6 pixel feature maps.
"""
from pathlib import Path

from torch import nn
from torch.nn import functional as F


def make_divisible(value, divisor=8, min_value=None):
    """Round ``value`` to a multiple of ``divisor`` not below 90 % of it (timm)."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class SqueezeExcite(nn.Module):
    """Channel attention: global average -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid gate.

    The squeeze is a global average pool (not ``mean``) so that the ONNX export is a GlobalAveragePool,
    which ONNX Runtime quantises as such: the int8 pixel graph then stays int8 through each SE gate.
    """

    def __init__(self, channels, rd_ratio=1 / 16, rd_divisor=8):
        super().__init__()
        reduced = make_divisible(channels * rd_ratio, rd_divisor)
        self.fc1 = nn.Conv2d(channels, reduced, kernel_size=1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(reduced, channels, kernel_size=1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        scale = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.fc2(self.act(self.fc1(scale))))


def conv3x3(in_channels, out_channels, stride=1):
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs) with SE applied before the residual sum."""

    def __init__(self, in_channels, out_channels, stride=1, use_se=True, se_ratio=1 / 16):
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.se = SqueezeExcite(out_channels, se_ratio) if use_se else nn.Identity()
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x):
        out = self.act(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.act(out + self.shortcut(x))


class SEResNet(nn.Module):
    """Stem + four stages of BasicBlocks + global average pool -> [B, widths[-1]].

    ``stem_stride`` 2 halves the maps of every stage: a quarter of the multiply-adds.
    """

    def __init__(self, blocks_per_stage=(2, 2, 2, 2), widths=(64, 128, 256, 512), in_channels=1,
                 use_se=True, se_ratio=1 / 16, stem_stride=1):
        super().__init__()
        self.stem = nn.Sequential(conv3x3(in_channels, widths[0], stem_stride), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        stages = []
        channels = widths[0]
        for index, (num_blocks, width) in enumerate(zip(blocks_per_stage, widths)):
            stride = 1 if index == 0 else 2
            blocks = [BasicBlock(channels, width, stride, use_se, se_ratio)]
            blocks += [BasicBlock(width, width, 1, use_se, se_ratio) for _ in range(num_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_features = channels
        self._init_weights()

    def _init_weights(self):
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        return self.pool(self.stages(self.stem(x))).flatten(1)


def se_resnet18(*, weights=None, **kwargs):
    """SE-ResNet18 (2-2-2-2 blocks); ``weights``: optional .safetensors state-dict file."""
    model = SEResNet(blocks_per_stage=(2, 2, 2, 2), **kwargs)
    if weights is not None:
        from safetensors.torch import load_file
        model.load_state_dict(load_file(str(Path(weights))))
    return model
