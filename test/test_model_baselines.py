"""EfficientNet-B2 and PCNN baselines: shapes, gradients, region sampling, checkpoints, inference."""

import math

import cv2
import numpy as np
import pytest
import torch
from torchvision.models.efficientnet import MBConv

from fer_ros.labels import FER2013_LABELS
from fer_ros.model.baselines import PCNN, PCNN_REGIONS, EfficientNetFER, EfficientNetFERConfig, PCNNConfig
from fer_ros.model.checkpoint import load_model, save_checkpoint
from fer_ros.model.inference import ExpressionClassifier
from fer_ros.model.losses import LossConfig, TrainingObjective
from fer_ros.training.evaluate import evaluate_checkpoint

TINY_PCNN = PCNNConfig(local_widths=(8, 8), global_widths=(8, 8, 16), feature_dim=16, heads=2, dropout=0.0)


def _batch(size=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(size, 1, 48, 48, generator=generator)
    landmarks = 0.3 + 0.4 * torch.rand(size, 468, 3, generator=generator)
    return images, landmarks


def test_efficientnet_output_shapes_and_size():
    model = EfficientNetFER(EfficientNetFERConfig(num_classes=7)).eval()
    images, _ = _batch()
    output = model(images)
    assert output.logits.shape == (4, 7) and output.fused.shape == (4, 1408)
    assert output.landmarks is None and output.reconstruction is None
    assert not model.uses_landmarks
    assert 7_000_000 < sum(p.numel() for p in model.parameters()) < 8_000_000


def test_efficientnet_starts_near_chance():
    # The head is initialised for 7 classes: the initial loss is close to ln 7, not torchvision's 1000-class scale.
    torch.manual_seed(0)
    model = EfficientNetFER(EfficientNetFERConfig(num_classes=7)).train()
    images = torch.rand(32, 1, 48, 48)
    logits = model(images).logits
    loss = torch.nn.functional.cross_entropy(logits, torch.randint(0, 7, (32,)))
    assert abs(loss.item() - math.log(7)) < 0.3 and logits.std() < 1.0


def test_efficientnet_residual_blocks_start_as_identity():
    model = EfficientNetFER().eval()
    residual = [block for block in model.features.modules() if isinstance(block, MBConv) and block.use_res_connect]
    assert len(residual) == 16  # B2: 23 blocks, 7 of them change shape
    seen = {}

    def record(block, args, output):
        seen[block] = (args[0], output)

    handles = [block.register_forward_hook(record) for block in residual]
    model(_batch()[0])
    for handle in handles:
        handle.remove()
    assert len(seen) == len(residual)
    for block_input, block_output in seen.values():
        assert torch.equal(block_input, block_output)


def test_pcnn_patches_follow_the_landmarks():
    sampler = PCNN(TINY_PCNN).regions
    image = torch.zeros(1, 1, 48, 48)
    image[..., 32:48, 2:18] = 1.0  # a bright square centred on x 10, y 40
    landmarks = torch.full((1, 468, 3), 0.5)
    landmarks[0, list(PCNN_REGIONS['mouth']), 0] = 10 / 48
    landmarks[0, list(PCNN_REGIONS['mouth']), 1] = 40 / 48
    patches = sampler(image, landmarks)
    assert patches.shape == (1, len(PCNN_REGIONS), 1, 16, 16)
    mouth = list(PCNN_REGIONS).index('mouth')
    assert patches[0, mouth].min() > 0.999  # the 14 px patch lies inside the 16 px square
    assert all(patches[0, i].mean() == 0 for i in range(len(PCNN_REGIONS)) if i != mouth)


def test_pcnn_both_loss_phases_train_every_part():
    torch.manual_seed(0)
    model = PCNN(TINY_PCNN)
    objective = TrainingObjective(LossConfig(weights={'focal': 1.0, 'reconstruction': 1.0}))
    images, landmarks = _batch(8)
    targets = torch.arange(8) % 7
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss, terms, output = objective(model, images, landmarks, targets)
        optimizer.zero_grad()
        loss.backward()
        if not losses:
            assert set(terms) == {'focal', 'reconstruction'}
            assert output.reconstruction.shape == images.shape
            silent = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
            assert not silent, silent
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_pcnn_needs_landmarks():
    with pytest.raises(ValueError, match='landmarks'):
        PCNN(TINY_PCNN)(torch.rand(1, 1, 48, 48))


@pytest.mark.parametrize('model', [EfficientNetFER(), PCNN(TINY_PCNN)], ids=['efficientnet_b2', 'pcnn'])
def test_checkpoint_round_trip_and_classifier(model, tmp_path):
    model.eval()
    weights, _ = save_checkpoint(tmp_path / 'baseline', model, {'labels': list(FER2013_LABELS)})
    loaded, metadata = load_model(weights)
    assert metadata['architecture'] == model.architecture
    images, landmarks = _batch(2)
    with torch.no_grad():
        assert torch.allclose(model(images, landmarks).logits, loaded(images, landmarks).logits, atol=1e-5)
    classifier = ExpressionClassifier(weights, device='cpu')
    crops = (images[:, 0].numpy() * 255).astype(np.uint8)
    probabilities = classifier.predict(crops, landmarks.numpy())
    assert probabilities.shape == (2, 7) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_compare_puts_every_architecture_in_one_table(tmp_path):
    from fer_ros.training.compare import main as compare_main
    folder = tmp_path / 'faces'
    generator = np.random.default_rng(0)
    for label in FER2013_LABELS:  # 48x48 noise images: only the table's plumbing is under test here
        (folder / 'val' / label).mkdir(parents=True)
        for index in range(2):
            cv2.imwrite(str(folder / 'val' / label / f'{index}.png'), generator.integers(0, 255, (48, 48), np.uint8))
    paths = []
    for model in (EfficientNetFER(), PCNN(TINY_PCNN)):
        weights, _ = save_checkpoint(tmp_path / model.architecture, model.eval(), {'labels': list(FER2013_LABELS)},
                                     half=True)
        paths.append(str(weights))
    rows = compare_main(paths + ['--data', str(folder), '--landmark-cache', str(tmp_path / 'cache'),
                                 '--repeats', '2', '--output', str(tmp_path / 'report'), '--ensemble'])
    assert [row['architecture'] for row in rows] == ['efficientnet_b2', 'pcnn', 'ensemble']
    assert all(0 <= row['accuracy'] <= 1 and row['cpu_ms_per_face_batch1'] > 0 for row in rows)
    assert rows[0]['weights_mb'] < 25
    assert '| pcnn |' in (tmp_path / 'report' / 'comparison.md').read_text()
    # The ensemble row scores the mean of the two models' probabilities.
    reports = [evaluate_checkpoint(path, folder, landmark_cache=tmp_path / 'cache', device='cpu') for path in paths]
    mean = (reports[0]['probabilities'] + reports[1]['probabilities']) / 2
    labels = np.array([FER2013_LABELS.index(row['label']) for row in reports[0]['predictions']])
    assert rows[2]['accuracy'] == pytest.approx(float((mean.argmax(axis=1) == labels).mean()))
    assert rows[2]['parameters'] == rows[0]['parameters'] + rows[1]['parameters']
