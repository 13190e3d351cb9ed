"""Recipe pieces of the baselines: label smoothing, clipped class weights, LR warm-up, stratified hold-out."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fer_ros.data.datasets import ImageSamples, PreparedFaces
from fer_ros.model.losses import FocalLoss, LossConfig, alpha_from_class_counts
from fer_ros.training.train import STOCHASTIC_REGULARIZERS, Trainer, load_config, lr_schedule, stratified_holdout

REPO = Path(__file__).resolve().parents[1]


def test_focal_with_gamma_zero_and_smoothing_is_label_smoothed_cross_entropy():
    logits, targets = torch.randn(16, 7, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 7
    ours = FocalLoss(gamma=0.0, label_smoothing=0.06)(logits, targets)
    assert torch.allclose(ours, F.cross_entropy(logits, targets, label_smoothing=0.06), atol=1e-6)
    assert not torch.allclose(ours, F.cross_entropy(logits, targets), atol=1e-4)


def test_class_weights_are_clipped():
    counts = [3995, 436, 4097, 7215, 4830, 3171, 4965]  # FER-2013 train
    alpha = alpha_from_class_counts(counts, power=1.0, clip=(0.5, 3.0))
    assert alpha.min() >= 0.5 and alpha.max() == pytest.approx(3.0)
    assert int(alpha.argmax()) == 1  # disgust, the rare class


def test_lr_warms_up_then_decays():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=1.0)
    scheduler = lr_schedule(optimizer, epochs=10, warmup_epochs=3)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.1)
    assert rates[0] < rates[1] < rates[2] < rates[3] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(rates[3:], rates[4:]))


def test_stratified_holdout_keeps_class_shares_and_is_disjoint():
    labels = np.repeat(np.arange(4), [80, 16, 40, 24])
    samples = ImageSamples([f'img{i}.png' for i in range(len(labels))], labels, ('a', 'b', 'c', 'd'))
    train, held_out = stratified_holdout(samples, 0.125, seed=0)
    assert len(held_out) == 20 and len(train) == 140
    assert not set(train.images) & set(held_out.images)
    assert list(held_out.class_counts()) == [10, 2, 5, 3]


def test_efficientnet_recipe_config_is_complete():
    config = load_config(REPO / 'config' / 'train_fer2013_efficientnet.yaml')
    assert config['architecture'] == 'efficientnet_b2'
    loss = LossConfig.from_dict(config['loss'])
    assert loss.label_smoothing == 0.06 and loss.focal_gamma == 0.0 and loss.alpha_clip
    assert config['train']['warmup_epochs'] > 0 and config['data']['val_from_train'] == 0.125


def test_warmup_stage_has_its_own_augmentation_and_no_dropout(tmp_path):
    config = load_config(REPO / 'config' / 'train_fer2013_efficientnet.yaml', [
        f'output_dir={tmp_path}', 'train.warmup_epochs=2', 'train.device=cpu', 'train.num_workers=0'])
    rng = np.random.default_rng(0)
    faces = PreparedFaces(rng.integers(0, 256, (14, 48, 48), dtype=np.uint8), np.zeros((14, 468, 3), np.float32),
                          np.zeros(14, bool), np.arange(14) % 7, tuple('abcdefg'))
    trainer = Trainer(config, faces, faces)
    regularizers = [m for m in trainer.model.modules() if isinstance(m, STOCHASTIC_REGULARIZERS)]
    batch_norms = [m for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(regularizers) == 24  # the head's dropout and stochastic depth in the 23 blocks
    for epoch, warming_up in [(0, True), (1, True), (2, False)]:
        trainer.epoch = epoch
        trainer.start_epoch()
        assert all(m.training for m in batch_norms)
        assert all(m.training != warming_up for m in regularizers)
        augment = trainer.train_set.augment
        assert (augment.max_rotation_deg, augment.erase_probability) == ((0, 0) if warming_up else (15, 0.5))


def test_steps_per_epoch_caps_the_batches_of_each_epoch(tmp_path):
    config = load_config(REPO / 'config' / 'finetune_fer2013_pixel_fgsm.yaml', [
        f'output_dir={tmp_path}', 'init_from=null', 'model.cnn_widths=[8,8,8,8]', 'model.fusion_dim=8',
        'train.batch_size=2', 'train.steps_per_epoch=3', 'train.device=cpu'])
    rng = np.random.default_rng(0)
    faces = PreparedFaces(rng.integers(0, 256, (14, 48, 48), dtype=np.uint8), np.zeros((14, 468, 3), np.float32),
                          np.zeros(14, bool), np.arange(14) % 7, tuple('abcdefg'))
    trainer = Trainer(config, faces, faces)
    first_weight = next(trainer.model.parameters())
    for epoch in range(2):
        trainer.epoch = epoch
        terms = trainer.train_epoch()
        assert trainer.optimizer.state[first_weight]['step'] == 3 * (epoch + 1)
        assert terms['train_fgsm'] > 0  # the FGSM term of this recipe is on
