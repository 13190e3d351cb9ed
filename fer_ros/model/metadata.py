"""Checkpoint files and their metadata, read without PyTorch (:mod:`fer_ros.model.checkpoint` builds models).

A checkpoint is ``<name>.safetensors`` (weights) + ``<name>.json`` (metadata).
"""
import hashlib
import json
from pathlib import Path

from fer_ros.labels import ALIASES

FORMAT_VERSION = 1
# The architectures fer_ros builds (fer_ros.model.checkpoint.ARCHITECTURES, a test keeps them equal).
ARCHITECTURE_NAMES = frozenset({'cnn_se_gcn', 'cnn_se_gcn_facemesh', 'cnn_se_gcn_fused', 'efficientnet_b2', 'pcnn'})
DEFAULT_NAME = 'model'
KNOWN_LABELS = frozenset(ALIASES.values())


class ModelLoadError(ValueError):
    """A checkpoint is missing, unreadable or does not match its architecture."""


def checkpoint_paths(path):
    """(weights, metadata) paths of a checkpoint given as a dir, a stem, or either file."""
    path = Path(path)
    if path.is_dir():
        path = path / DEFAULT_NAME
    elif path.suffix in ('.safetensors', '.json'):
        path = path.with_suffix('')
    return path.with_name(path.name + '.safetensors'), path.with_name(path.name + '.json')


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as file:
        for block in iter(lambda: file.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def read_metadata(path):
    """The validated JSON metadata of a checkpoint."""
    _, metadata_path = checkpoint_paths(path)
    if not metadata_path.is_file():
        raise ModelLoadError(f'model metadata file {metadata_path} not found')
    try:
        metadata = json.loads(metadata_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelLoadError(f'model metadata {metadata_path} is not valid JSON: {error}') from error
    if not isinstance(metadata, dict):
        raise ModelLoadError(f'model metadata {metadata_path} must be a JSON object')
    missing = [key for key in ('architecture', 'config', 'labels') if key not in metadata]
    if missing:
        raise ModelLoadError(f'model metadata {metadata_path} lacks {missing}')
    if not isinstance(metadata['architecture'], str) or metadata['architecture'] not in ARCHITECTURE_NAMES:
        raise ModelLoadError(f'unknown architecture {metadata["architecture"]!r} in {metadata_path}; '
                             f'known: {sorted(ARCHITECTURE_NAMES)}')
    if not isinstance(metadata['config'], dict):
        raise ModelLoadError(f'model metadata {metadata_path}: config must be a JSON object')
    labels = metadata['labels']
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ModelLoadError(f'model metadata {metadata_path}: labels must be a list of strings, got {labels!r}')
    unknown = [label for label in labels if label not in KNOWN_LABELS]
    if unknown or len(set(labels)) != len(labels):
        raise ModelLoadError(f'model metadata {metadata_path}: labels must be distinct expression labels '
                             f'({", ".join(sorted(KNOWN_LABELS))}); got {labels}')
    if not isinstance(metadata.get('weights_sha256', ''), str):
        raise ModelLoadError(f'model metadata {metadata_path}: weights_sha256 must be a string')
    if not isinstance(metadata.get('name', ''), str):
        raise ModelLoadError(f'model metadata {metadata_path}: name must be a string, got {metadata["name"]!r}')
    return metadata
