"""Checkpoint round trip, each ModelLoadError case, ExpressionClassifier and align_face."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from fer_ros.data.landmarks import mean_template
from fer_ros.labels import FER2013_LABELS
from fer_ros.model.checkpoint import (ARCHITECTURES, INT8_SCALE_SUFFIX, ModelLoadError, load_model,
                                      load_training_state, save_checkpoint, save_training_state)
from fer_ros.model.cnn_se_gcn import CNNSEGCN, CNNSEGCNConfig
from fer_ros.model.export import export
from fer_ros.model.inference import ExpressionClassifier
from fer_ros.model.metadata import ARCHITECTURE_NAMES
from fer_ros.vision.alignment import align_face

torch.set_num_threads(1)
TINY = dict(cnn_widths=(8, 8, 16, 16), gcn_widths=(8, 8), geometry_dim=8, fusion_dim=16)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = CNNSEGCN(CNNSEGCNConfig(**TINY)).eval()
    save_checkpoint(tmp_path / 'fer', model, {'labels': list(FER2013_LABELS), 'metrics': {'val_accuracy': 0.5}})
    return model, tmp_path / 'fer'


def inputs(size=3):
    generator = torch.Generator().manual_seed(2)
    images = torch.rand(size, 1, 48, 48, generator=generator)
    return images, torch.from_numpy(mean_template())[None].repeat(size, 1, 1)


def test_round_trip_gives_identical_outputs(saved):
    model, path = saved
    loaded, metadata = load_model(path)
    assert not loaded.training
    assert metadata['labels'] == list(FER2013_LABELS) and metadata['metrics'] == {'val_accuracy': 0.5}
    assert metadata['input_size'] == 48 and metadata['num_landmarks'] == 468
    images, landmarks = inputs()
    with torch.no_grad():
        assert torch.equal(model(images, landmarks).logits, loaded(images, landmarks).logits)


def test_half_precision_round_trip(tmp_path, saved):
    model, _ = saved
    save_checkpoint(tmp_path / 'half', model, {'labels': list(FER2013_LABELS)}, half=True)
    loaded, metadata = load_model(tmp_path / 'half.json')
    assert metadata['dtype'] == 'float16'
    images, landmarks = inputs()
    with torch.no_grad():
        assert torch.allclose(model(images, landmarks).logits, loaded(images, landmarks).logits, atol=1e-2)


def test_int8_weights_round_trip_within_half_a_step_per_channel(tmp_path, saved):
    model, _ = saved
    save_checkpoint(tmp_path / 'int8', model, {'labels': list(FER2013_LABELS)}, half=True, int8_prefixes=('cnn.',))
    stored = load_file(str(tmp_path / 'int8.safetensors'))
    int8_keys = [key for key, tensor in stored.items() if tensor.dtype == torch.int8]
    # every convolution weight of the CNN, nothing else (batch norm, GCN, classifier stay float16)
    expected = [key for key, tensor in model.state_dict().items()
                if key.startswith('cnn.') and key.endswith('.weight') and tensor.dim() >= 2]
    assert sorted(int8_keys) == sorted(expected) and expected
    assert all(key + INT8_SCALE_SUFFIX in stored for key in int8_keys)
    loaded, metadata = load_model(tmp_path / 'int8')
    assert metadata['int8_weights']['tensors'] == len(expected)
    original, restored = model.state_dict(), loaded.state_dict()
    for key in expected:
        step = original[key].abs().flatten(1).amax(dim=1) / 127
        error = (original[key] - restored[key]).abs().flatten(1).amax(dim=1)
        assert (error <= step / 2 + 1e-7).all(), key
    images, landmarks = inputs()
    with torch.no_grad():
        assert torch.allclose(model(images, landmarks).logits, loaded(images, landmarks).logits, atol=5e-2)
    # fer-export keeps them int8: the same integers and scales again
    export(tmp_path / 'int8', tmp_path / 'exported')
    again = load_file(str(tmp_path / 'exported.safetensors'))
    assert all(torch.equal(again[key], stored[key]) for key in int8_keys)


@pytest.mark.parametrize('damage, message', [
    (lambda state, key: state.pop(key), 'not the per-channel scale'),  # a scale without its weight
    (lambda state, key: state.update({key + INT8_SCALE_SUFFIX: state[key + INT8_SCALE_SUFFIX][:-1]}),
     'not the per-channel scale'),
    (lambda state, key: state.update({key + INT8_SCALE_SUFFIX: torch.full_like(state[key + INT8_SCALE_SUFFIX],
                                                                               float('inf'))}),
     'not the per-channel scale'),
    (lambda state, key: state.pop(key + INT8_SCALE_SUFFIX), 'integers where the architecture has floats'),
])
def test_int8_weights_with_a_damaged_scale_are_refused(tmp_path, saved, damage, message):
    model, _ = saved
    save_checkpoint(tmp_path / 'int8', model, {'labels': list(FER2013_LABELS)}, int8_prefixes=('cnn.',))
    weights = tmp_path / 'int8.safetensors'
    state = load_file(str(weights))
    damage(state, next(key for key, tensor in state.items() if tensor.dtype == torch.int8))
    save_file(state, str(weights))
    rewrite_metadata(tmp_path / 'int8', lambda metadata: metadata.pop('weights_sha256'))  # past the sha256 check
    with pytest.raises(ModelLoadError, match=message):
        load_model(tmp_path / 'int8')


def test_missing_weights(tmp_path):
    with pytest.raises(ModelLoadError, match='not found'):
        load_model(tmp_path / 'nothing')


def test_missing_json(saved):
    _, path = saved
    path.with_suffix('.json').unlink()
    with pytest.raises(ModelLoadError, match='metadata .* not found'):
        load_model(path)


def test_invalid_json(saved):
    _, path = saved
    path.with_suffix('.json').write_text('{"labels": [')
    with pytest.raises(ModelLoadError, match='not valid JSON'):
        load_model(path)


def test_corrupt_safetensors(saved):
    _, path = saved
    weights = path.with_suffix('.safetensors')
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(ModelLoadError, match='corrupt'):
        load_model(path)


def rewrite_metadata(path, change):
    """Apply ``change`` (a function that edits the dict in place) to a checkpoint's JSON."""
    metadata_path = path.with_suffix('.json')
    metadata = json.loads(metadata_path.read_text())
    change(metadata)
    metadata_path.write_text(json.dumps(metadata))


def test_architecture_mismatch(saved):
    _, path = saved
    rewrite_metadata(path, lambda metadata: metadata['config'].update(fusion_dim=32))
    with pytest.raises(ModelLoadError, match='do not match the architecture'):
        load_model(path)


def test_bit_flipped_weights_are_refused_by_their_sha256(saved):
    _, path = saved
    weights = path.with_suffix('.safetensors')
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x04  # inside the last tensor: still a well-formed safetensors file
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match='sha256'):
        load_model(path)


def test_checkpoint_without_a_recorded_sha256_still_loads(saved):
    _, path = saved
    rewrite_metadata(path, lambda metadata: metadata.pop('weights_sha256'))
    load_model(path)


@pytest.mark.parametrize('changes, message', [
    (dict(labels=['happy', 'bored', 'sad', 'angry', 'scared', 'surprised', 'neutral']), 'expression labels'),
    (dict(labels=['happy'] * 7), 'distinct'),
    (dict(labels='happy sad'), 'list of strings'),
    (dict(name=5), 'name must be a string'),
    (dict(config=[1, 2]), 'config must be'),
    (dict(architecture=['cnn_se_gcn']), 'unknown architecture'),
])
def test_invalid_metadata_is_refused(saved, changes, message):
    _, path = saved
    rewrite_metadata(path, lambda metadata: metadata.update(changes))
    with pytest.raises(ModelLoadError, match=message):
        load_model(path)


def test_non_finite_weights_are_refused(tmp_path):
    model = CNNSEGCN(CNNSEGCNConfig(**TINY))
    with torch.no_grad():
        model.classifier.weight[0, 0] = float('nan')
    save_checkpoint(tmp_path / 'nan', model, {'labels': list(FER2013_LABELS)})
    with pytest.raises(ModelLoadError, match='NaN or infinite'):
        load_model(tmp_path / 'nan')


def test_metadata_knows_every_architecture_checkpoints_build():
    assert ARCHITECTURE_NAMES == set(ARCHITECTURES)


def test_classifier_is_named_as_loaded_not_by_its_metadata(saved):
    _, path = saved
    rewrite_metadata(path, lambda metadata: metadata.update(name='something_else'))
    assert ExpressionClassifier(path, device='cpu').name == 'fer'
    assert ExpressionClassifier(path, device='cpu', name='alias').name == 'alias'


def test_training_state_round_trip(tmp_path, saved):
    model, _ = saved
    optimizer = torch.optim.AdamW(model.parameters())
    state = {'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'epoch': 3,
             'torch_rng': torch.get_rng_state()}
    save_training_state(tmp_path / 'state.pt', state)
    restored = load_training_state(tmp_path / 'state.pt')
    assert restored['epoch'] == 3 and torch.equal(restored['torch_rng'], state['torch_rng'])


def test_classifier_predicts_probabilities(saved):
    _, path = saved
    classifier = ExpressionClassifier(path, device='cpu')
    assert classifier.labels == FER2013_LABELS and classifier.name == 'fer'
    crops = np.random.default_rng(0).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    probabilities = classifier.predict(crops, np.repeat(mean_template()[None], 5, axis=0))
    assert probabilities.shape == (5, 7) and probabilities.dtype == np.float32
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert classifier.predict(np.zeros((0, 48, 48), np.uint8)).shape == (0, 7)
    with pytest.raises(ValueError, match='needs landmarks'):
        classifier.predict(crops)


def test_align_face_maps_landmarks_with_the_image():
    image = np.zeros((200, 240), np.uint8)
    landmarks_px = mean_template() * 120 + np.array([60.0, 40.0, 0.0], np.float32)
    x, y = landmarks_px[1, :2].round().astype(int)  # mark the nose tip
    image[y - 2:y + 3, x - 2:x + 3] = 255
    crop, aligned = align_face(image, landmarks_px)
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    assert aligned.shape == (468, 3) and aligned[:, :2].min() > 0 and aligned[:, :2].max() < 1
    brightest = np.unravel_index(crop.argmax(), crop.shape)
    assert np.allclose(np.array(brightest[::-1]), aligned[1, :2] * 48, atol=1.0)
    left_eye, right_eye = aligned[[33, 133]].mean(0), aligned[[263, 362]].mean(0)
    assert abs(left_eye[1] - right_eye[1]) < 1e-4


def test_align_face_levels_a_rotated_face():
    template = mean_template() * 100
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    rotated = template.copy()
    rotated[:, :2] = (template[:, :2] - 50) @ rotation.T + 100
    _, aligned_rotated = align_face(np.zeros((200, 200, 3), np.uint8), rotated)
    _, aligned = align_face(np.zeros((200, 200), np.uint8), template)
    assert np.allclose(aligned_rotated, aligned, atol=1e-3)
