"""Expression models, checkpoints and inference (no ROS imports).

The serving path (:mod:`fer_ros.model.compiled`, :mod:`fer_ros.model.metadata`) imports no PyTorch; the
model definitions and training do.
"""
