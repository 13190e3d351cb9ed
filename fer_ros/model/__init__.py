"""CNN-SE-GCN facial-expression model, checkpoints and inference (no ROS imports)."""
from fer_ros.model.cnn_se_gcn import CNNSEGCN, CNNSEGCNConfig, CNNSEGCNOutput, GeometryDiscriminator
from fer_ros.model.se_resnet import SEResNet, SqueezeExcite, se_resnet18

__all__ = ['CNNSEGCN', 'CNNSEGCNConfig', 'CNNSEGCNOutput', 'GeometryDiscriminator',
           'SEResNet', 'SqueezeExcite', 'se_resnet18']
