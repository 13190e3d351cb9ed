"""Model checkpoints: ``<name>.safetensors`` (weights) + ``<name>.json`` (metadata).

The JSON holds everything needed to rebuild and use the model: format
version, architecture name and config, labels, input size, number of
landmarks, the sha256 of the weights file (checked on load, so a truncated
or bit-flipped file is refused), plus free-form training data and metrics.
Weights are float32 or float16; chosen convolution and linear weights may be
stored as int8 with one float32 scale per output channel (``<key>`` int8 +
``<key>.int8_scale``), turned back into floats on load. Training state for an
exact resume (optimizer, scheduler, RNG, epoch) is a separate ``.pt`` file
read with ``torch.load(weights_only=True)``.
"""
import csv
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fer_ros.model.baselines import PCNN, EfficientNetFER, EfficientNetFERConfig, PCNNConfig
from fer_ros.model.cnn_se_gcn import CNNSEGCN, CNNSEGCNConfig
from fer_ros.model.face_mesh_cnn_se_gcn import FaceMeshCNNSEGCN, FaceMeshCNNSEGCNConfig
from fer_ros.model.fused import FusedCNNSEGCN, FusedCNNSEGCNConfig
from fer_ros.model.metadata import (FORMAT_VERSION, ModelLoadError, checkpoint_paths, file_sha256,
                                    read_metadata)

INT8_SCALE_SUFFIX = '.int8_scale'

# architecture name in the JSON -> (config class, model class)
ARCHITECTURES = {
    CNNSEGCN.architecture: (CNNSEGCNConfig, CNNSEGCN),
    EfficientNetFER.architecture: (EfficientNetFERConfig, EfficientNetFER),
    PCNN.architecture: (PCNNConfig, PCNN),
    FaceMeshCNNSEGCN.architecture: (FaceMeshCNNSEGCNConfig, FaceMeshCNNSEGCN),
    FusedCNNSEGCN.architecture: (FusedCNNSEGCNConfig, FusedCNNSEGCN),
}


def save_checkpoint(path, model, metadata, half=False, int8_prefixes=()):
    """Write weights and metadata; ``metadata`` must contain ``labels``. Returns both paths.

    ``half`` stores floating-point weights as float16 (loaded back as float32). Convolution and linear
    weights (``*.weight`` of 2 or more dimensions) whose key starts with one of ``int8_prefixes`` are
    stored as int8, symmetric per output channel (:func:`int8_per_channel`).
    """
    labels = list(metadata.get('labels', ()))
    if len(labels) != model.config.num_classes:
        raise ValueError(f'metadata labels {labels} do not match num_classes={model.config.num_classes}')
    weights_path, metadata_path = checkpoint_paths(path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    state = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if key.startswith(tuple(int8_prefixes)) and key.endswith('.weight') and tensor.dim() >= 2:
            state[key], state[key + INT8_SCALE_SUFFIX] = int8_per_channel(tensor)
        else:
            state[key] = (tensor.half() if half and tensor.is_floating_point() else tensor).contiguous()
    save_file(state, str(weights_path))
    document = {key: value for key, value in metadata.items() if key != 'int8_weights'}  # as saved now
    document['weights_sha256'] = file_sha256(weights_path)
    document.update({
        'format_version': FORMAT_VERSION,
        'architecture': model.architecture,
        'config': model.config.to_dict(),
        'labels': labels,
        'input_size': model.config.input_size,
        'num_landmarks': model.config.num_landmarks,
        'uses_landmarks': model.uses_landmarks,
        'dtype': 'float16' if half else 'float32',
    })
    int8_keys = sorted(key[:-len(INT8_SCALE_SUFFIX)] for key in state if key.endswith(INT8_SCALE_SUFFIX))
    if int8_keys:
        document['int8_weights'] = {'prefixes': list(int8_prefixes), 'tensors': len(int8_keys),
                                    'scheme': 'symmetric, one scale per output channel (max |w| / 127)'}
    metadata_path.write_text(json.dumps(document, indent=2, default=str))
    return weights_path, metadata_path


def int8_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight, float32 scale [out channels]) with weight ~= int8 * scale, rounded to the nearest step."""
    weight = weight.float()
    scale = weight.abs().flatten(1).amax(dim=1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (torch.round(weight / _per_output_channel(scale, weight)).clamp(-127, 127).to(torch.int8).contiguous(),
            scale.contiguous())


def _per_output_channel(scale: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``scale`` [out channels] shaped to broadcast over ``weight`` [out channels, ...]."""
    return scale.view((-1,) + (1,) * (weight.dim() - 1))


def _dequantized(state: dict, weights_path) -> dict:
    """``state`` with every int8 weight and its ``.int8_scale`` turned back into one float32 tensor."""
    state = dict(state)
    for scale_key in [key for key in state if key.endswith(INT8_SCALE_SUFFIX)]:
        key, scale = scale_key[:-len(INT8_SCALE_SUFFIX)], state.pop(scale_key)
        weight = state.get(key)
        if (weight is None or weight.dtype != torch.int8 or weight.dim() < 2 or scale.dim() != 1
                or scale.shape[0] != weight.shape[0] or not scale.is_floating_point()
                or not torch.isfinite(scale).all()):
            raise ModelLoadError(f'weights in {weights_path}: {scale_key} is not the per-channel scale of an int8 '
                                 f'weight {key}')
        state[key] = weight.float() * _per_output_channel(scale.float(), weight)
    return state


def build_model(metadata):
    """An untrained model of the architecture described by the metadata."""
    config_class, model_class = ARCHITECTURES[metadata['architecture']]
    try:
        config = config_class.from_dict(metadata['config'])
        model = model_class(config)
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError, MemoryError) as error:
        raise ModelLoadError(f'invalid architecture config: {error!r}') from error
    if len(metadata['labels']) != config.num_classes:
        raise ModelLoadError(f'{len(metadata["labels"])} labels for {config.num_classes} classes')
    return model


def load_model(path, device='cpu'):
    """(model in eval mode on ``device``, metadata dict) of a checkpoint.

    Raises :class:`ModelLoadError` for a missing weights or JSON file, a corrupt
    safetensors file or one whose sha256 differs from its JSON's ``weights_sha256``
    (when recorded), invalid JSON or metadata (types, unknown labels), weights
    that do not fit the architecture or that are not finite.
    """
    weights_path, _ = checkpoint_paths(path)
    if not weights_path.is_file():
        raise ModelLoadError(f'model weights file {weights_path} not found')
    metadata = read_metadata(path)
    expected_sha256 = metadata.get('weights_sha256')
    if expected_sha256 is not None and file_sha256(weights_path) != expected_sha256:
        raise ModelLoadError(f'weights file {weights_path} does not match the sha256 in its JSON '
                             '(truncated, corrupted or replaced)')
    model = build_model(metadata)
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelLoadError(f'corrupt safetensors file {weights_path}: {error}') from error
    state = _dequantized(state, weights_path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [key for key in set(expected) & set(state) if expected[key].shape != state[key].shape]
    if missing or unexpected or mismatched:
        raise ModelLoadError(
            f'weights in {weights_path} do not match the architecture in its JSON: '
            f'missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {sorted(mismatched)[:5]}')
    not_float = sorted(key for key in state if expected[key].is_floating_point() and not state[key].is_floating_point())
    if not_float:  # an int8 weight that lost its scale, for one
        raise ModelLoadError(f'weights in {weights_path} hold integers where the architecture has floats: '
                             f'{not_float[:5]}')
    not_finite = sorted(key for key, tensor in state.items()
                        if tensor.is_floating_point() and not torch.isfinite(tensor).all())
    if not_finite:
        raise ModelLoadError(f'weights in {weights_path} hold NaN or infinite values: {not_finite[:5]}')
    model.load_state_dict({key: tensor.to(expected[key].dtype) for key, tensor in state.items()})
    return model.to(device).eval(), metadata


def save_training_state(path, state):
    """Save a dict of tensors/containers (model, optimizer, scheduler, RNG, epoch) for resume."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + '.partial')
    torch.save(state, partial)
    partial.replace(path)


def load_training_state(path, map_location='cpu'):
    """Load a training state saved by :func:`save_training_state` (weights_only)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def load_last_epoch(run_dir):
    """(model in eval mode, metadata) of a training run's last epoch: the weights of ``last.pt`` under
    the architecture of ``best.json``, with the last row of ``metrics.csv`` as its metrics."""
    run_dir = Path(run_dir)
    if not (run_dir / 'last.pt').is_file():
        raise ModelLoadError(f'{run_dir} holds no last.pt (not a fer-train output directory)')
    metadata = read_metadata(run_dir / 'best')
    model = build_model(metadata)
    state = load_training_state(run_dir / 'last.pt')
    model.load_state_dict(state['model'])
    metrics = {'epoch': state['epoch'], **last_logged_metrics(run_dir)}
    return model.eval(), {**metadata, 'epoch': state['epoch'], 'metrics': metrics}


def last_logged_metrics(run_dir) -> dict:
    """The validation metrics (val_*) of the last epoch in a training run's ``metrics.csv``."""
    with open(Path(run_dir) / 'metrics.csv', newline='') as handle:
        last_row = list(csv.DictReader(handle))[-1]
    return {key: float(value) for key, value in last_row.items() if key.startswith('val_')}
