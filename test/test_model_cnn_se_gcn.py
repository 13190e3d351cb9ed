"""Shapes and gradient flow of CNN-SE-GCN and every loss term (tiny widths, real forwards)."""
import pytest
import torch

from fer_ros.data.landmarks import mean_template
from fer_ros.model.attacks import fgsm, pgd, robustness_report
from fer_ros.model.cnn_se_gcn import CNNSEGCN, CNNSEGCNConfig, GeometryDiscriminator
from fer_ros.model.landmark_graph import facemesh_edge_index, normalized_adjacency_csr
from fer_ros.model.losses import (FocalLoss, LossConfig, TrainingObjective, discriminator_loss,
                                  geometric_constraint_loss)
from fer_ros.model.se_resnet import SqueezeExcite, se_resnet18

torch.set_num_threads(1)
TINY = dict(cnn_widths=(8, 16, 16, 16), gcn_widths=(8, 8), geometry_dim=8, fusion_dim=16)


def tiny_model(**overrides):
    torch.manual_seed(0)
    return CNNSEGCN(CNNSEGCNConfig(**{**TINY, **overrides}))


def batch(size=4):
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(size, 1, 48, 48, generator=generator)
    landmarks = torch.from_numpy(mean_template())[None] + 0.01 * torch.randn(size, 468, 3, generator=generator)
    return images, landmarks, torch.arange(size) % 7


def test_output_shapes():
    images, landmarks, _ = batch()
    output = tiny_model()(images, landmarks)
    assert output.logits.shape == (4, 7)
    assert output.fused.shape == (4, 16)
    assert output.geometry.shape == (4, 8)
    assert output.landmarks.shape == (4, 468, 3)


def test_cnn_only_ablation_needs_no_landmarks():
    images, _, _ = batch()
    model = tiny_model(use_gcn=False, use_se=False)
    output = model(images)
    assert output.logits.shape == (4, 7) and output.geometry is None
    assert not any(isinstance(m, SqueezeExcite) for m in model.modules())


def test_gcn_model_requires_landmarks():
    with pytest.raises(ValueError, match='landmarks'):
        tiny_model()(batch()[0])


def test_se_resnet18_feature_vector():
    model = se_resnet18(widths=(8, 8, 16, 16))
    assert model(torch.rand(2, 1, 48, 48)).shape == (2, 16)


def test_stride_2_stem_runs_every_stage_on_half_size_maps_with_the_same_weights():
    images, landmarks, _ = batch()
    plain, strided = tiny_model(), tiny_model(stem_stride=2)
    assert plain.state_dict().keys() == strided.state_dict().keys()  # a stride-1 checkpoint initialises it
    maps = {}
    for name, model in (('plain', plain), ('strided', strided)):
        model.cnn.stages.register_forward_hook(lambda module, inputs, output, name=name: maps.update({name: output}))
        assert model(images, landmarks).logits.shape == (4, 7)
    assert maps['plain'].shape[-2:] == (6, 6) and maps['strided'].shape[-2:] == (3, 3)
    # Stored configs from before the option load as stride 1; other strides are refused.
    stored = {key: value for key, value in plain.config.to_dict().items() if key != 'stem_stride'}
    assert CNNSEGCNConfig.from_dict(stored).stem_stride == 1
    with pytest.raises(ValueError, match='stem_stride'):
        CNNSEGCNConfig(stem_stride=3)


def test_adjacency_is_symmetric_normalised():
    adjacency = normalized_adjacency_csr().to_dense()
    assert adjacency.shape == (468, 468)
    assert torch.allclose(adjacency, adjacency.t())
    assert facemesh_edge_index().shape == (2, 2 * 1322)
    eigenvalues = torch.linalg.eigvalsh(adjacency.double())
    assert eigenvalues.max() == pytest.approx(1.0, abs=1e-6)


def test_gradient_reaches_parameters_through_every_loss_term():
    images, landmarks, targets = batch()
    mask = torch.tensor([True, True, False, True])
    discriminator = GeometryDiscriminator(code_dim=16, hidden=16)
    for term in ('focal', 'geometry', 'adversarial', 'fgsm'):
        model = tiny_model()
        objective = TrainingObjective(LossConfig(weights={term: 1.0}), class_counts=[50, 5, 20, 90, 30, 25, 40])
        total, terms, _ = objective(model, images, landmarks, targets, mask, discriminator)
        assert set(terms) == {term}
        model.zero_grad()
        total.backward()
        head = model.landmark_head if term in ('geometry', 'adversarial') else model.classifier
        trunk_grad = model.cnn.stem[0].weight.grad
        assert trunk_grad is not None and trunk_grad.abs().sum() > 0, term
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters()), term
        if term != 'geometry':
            gcn_grad = model.gcn.blocks[0].conv.linear.weight.grad
            assert gcn_grad is not None and gcn_grad.abs().sum() > 0, term


def test_all_parameters_receive_gradient_from_full_objective():
    images, landmarks, targets = batch()
    model = tiny_model()
    total, _, _ = TrainingObjective(LossConfig())(model, images, landmarks, targets,
                                                  discriminator=GeometryDiscriminator(code_dim=16, hidden=16))
    total.backward()
    without = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert without == []


def test_discriminator_loss_with_gradient_penalty_trains_discriminator():
    _, landmarks, _ = batch()
    discriminator = GeometryDiscriminator(code_dim=16, hidden=16)
    generated = torch.randn(4, 468, 3, requires_grad=True)
    loss = discriminator_loss(discriminator, landmarks, generated, r1_weight=10.0)
    loss.backward()
    assert generated.grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in discriminator.parameters())


def test_focal_loss_reduces_to_cross_entropy():
    logits, targets = torch.randn(6, 7), torch.arange(6)
    assert FocalLoss(gamma=0.0)(logits, targets) == pytest.approx(
        torch.nn.functional.cross_entropy(logits, targets).item(), rel=1e-5)


def test_geometric_loss_ignores_masked_images():
    _, landmarks, _ = batch()
    reconstructed = torch.zeros(4, 468, 3)
    mask = torch.tensor([True, False, False, False])
    assert geometric_constraint_loss(reconstructed, landmarks, mask) == pytest.approx(
        geometric_constraint_loss(reconstructed[:1], landmarks[:1]).item())


def test_attacks_stay_in_eps_ball_and_unit_range():
    images, landmarks, targets = batch()
    model = tiny_model().eval()

    def model_fn(x):
        return model(x, landmarks).logits

    for adversarial in (fgsm(model_fn, images, targets, 0.03), pgd(model_fn, images, targets, 0.03, 0.01, 3)):
        assert (adversarial - images).abs().max() <= 0.03 + 1e-6
        assert adversarial.min() >= 0 and adversarial.max() <= 1
        assert not adversarial.requires_grad
    assert all(p.grad is None for p in model.parameters())
    report = robustness_report(model_fn, images, eps=0.03, pgd_steps=2)
    assert report['clean_agreement'] == 1.0 and 0 <= report['pgd_agreement'] <= 1
