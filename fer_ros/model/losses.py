"""Training objective of CNN-SE-GCN; every term is weightable and switchable.

Terms (see docs/model_design.md):

* ``focal``: focal loss on the clean logits, alpha from class frequencies.
* ``geometry``: MSE between the model's reconstructed landmarks and the true
  per-face normalised landmarks, over images where a face was detected.
* ``adversarial``: non-saturating GAN generator term, the discriminator should
  take the reconstructed geometry for real; the discriminator itself is trained
  with BCE plus an R1 gradient penalty on real samples.
* ``fgsm``: focal loss on FGSM examples of the batch (adversarial training).
* ``reconstruction``: MSE between a model's reconstruction of the face image
  and the image (PCNN's second loss phase).
* ``distill``: knowledge distillation (Hinton et al. 2015) from teacher
  probabilities of each training image (``data.teacher_probs``):
  ``T^2 KL(teacher_T || student_T)`` at temperature ``distill_temperature``.

``label_smoothing`` eps mixes a uniform target into the classification term:
``(1 - eps) * focal + eps * mean_c(-log p_c)``; with ``focal_gamma: 0`` this is
label-smoothed cross-entropy. ``alpha_clip`` [lo, hi] clips the class weights
(after normalising them to mean 1).
"""
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from fer_ros.model.attacks import fgsm
from fer_ros.model.landmark_graph import normalize_face_geometry


def alpha_from_class_counts(counts, power=0.5, clip=None):
    """Per-class weights ``(1 / n_c) ** power``, normalised to mean 1, optionally clipped to [lo, hi]."""
    counts = torch.as_tensor(counts, dtype=torch.float32).clamp_min(1.0)
    alpha = counts.pow(-power)
    alpha = alpha * len(alpha) / alpha.sum()
    return alpha if clip is None else alpha.clamp(*clip)


class FocalLoss(nn.Module):
    """``mean_i alpha_{y_i} * (1 - p_{y_i}) ** gamma * -log p_{y_i}`` (Lin et al. 2017)."""

    def __init__(self, alpha=None, gamma=2.0, label_smoothing=0.0):
        super().__init__()
        self.register_buffer('alpha', None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32))
        self.gamma = gamma
        self.label_smoothing = label_smoothing

    def forward(self, logits, targets):
        all_log_probs = F.log_softmax(logits.float(), dim=1)
        log_probs = all_log_probs.gather(1, targets[:, None]).squeeze(1)
        loss = -(1.0 - log_probs.exp()).pow(self.gamma) * log_probs
        if self.label_smoothing:
            loss = (1.0 - self.label_smoothing) * loss - self.label_smoothing * all_log_probs.mean(dim=1)
        if self.alpha is not None:
            loss = loss * self.alpha[targets]
        return loss.mean()


def geometric_constraint_loss(reconstructed, landmarks, mask=None):
    """MSE between reconstructed and true per-face normalised geometry [B, N, 3].

    ``mask`` [B] bool drops images whose landmarks are the no-face fallback.
    """
    target = normalize_face_geometry(landmarks.float())
    per_image = (reconstructed.float() - target).pow(2).mean(dim=(1, 2))
    if mask is None:
        return per_image.mean()
    mask = mask.float()
    return (per_image * mask).sum() / mask.sum().clamp_min(1.0)


def discriminator_loss(discriminator, real_landmarks, generated_landmarks, r1_weight=1.0):
    """BCE(D(real), 1) + BCE(D(generated), 0) + r1_weight / 2 * E ||grad D(real)||^2.

    The generated landmarks are detached: this step only trains the discriminator.
    """
    real_code = discriminator.encode(real_landmarks).detach().requires_grad_(True)
    fake_code = discriminator.encode(generated_landmarks.detach())
    real_logits = discriminator(real_code)
    fake_logits = discriminator(fake_code)
    loss = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
    if r1_weight > 0:
        (gradient,) = torch.autograd.grad(real_logits.sum(), real_code, create_graph=True)
        loss = loss + r1_weight / 2 * gradient.pow(2).sum(dim=1).mean()
    return loss


def generator_adversarial_loss(discriminator, generated_landmarks):
    """Non-saturating generator term BCE(D(generated), 1)."""
    logits = discriminator(discriminator.encode(generated_landmarks))
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


LOSS_TERMS = ('focal', 'geometry', 'adversarial', 'fgsm', 'reconstruction', 'distill')


def distillation_loss(logits, teacher_probabilities, temperature):
    """T^2 KL(teacher_T || student_T); the teacher is given as probabilities, softened as exp(log p / T)."""
    teacher = torch.softmax(torch.log(teacher_probabilities.float().clamp_min(1e-8)) / temperature, dim=1)
    student = torch.log_softmax(logits.float() / temperature, dim=1)
    return F.kl_div(student, teacher, reduction='batchmean') * temperature ** 2


@dataclass
class LossConfig:
    """Weights (0 switches a term off; an absent term is off) and term parameters."""
    weights: dict = field(default_factory=lambda: {'focal': 1.0, 'geometry': 0.1, 'adversarial': 0.01, 'fgsm': 0.5})
    focal_gamma: float = 2.0
    alpha_power: float = 0.5
    r1_weight: float = 1.0
    fgsm_eps: float = 2 / 255
    label_smoothing: float = 0.0
    alpha_clip: tuple | None = None
    distill_temperature: float = 2.0

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f'unknown loss config keys: {sorted(unknown)}')
        config = cls(**values)
        unknown_terms = set(config.weights) - set(LOSS_TERMS)
        if unknown_terms:
            raise ValueError(f'unknown loss terms: {sorted(unknown_terms)}')
        return config

    def weight(self, term):
        return float(self.weights.get(term, 0.0))


class TrainingObjective(nn.Module):
    """All model-side loss terms of one batch; the discriminator step is separate."""

    def __init__(self, config: LossConfig, class_counts=None):
        super().__init__()
        self.config = config
        alpha = None if class_counts is None else alpha_from_class_counts(class_counts, config.alpha_power,
                                                                          config.alpha_clip)
        self.focal = FocalLoss(alpha, config.focal_gamma, config.label_smoothing)

    def forward(self, model, images, landmarks, targets, landmark_mask=None, discriminator=None, attack_model=None,
                teacher=None):
        """Returns (total loss, {term: detached value}, model output on the clean batch).

        attack_model (default model) crafts the FGSM images; under DDP pass
        the unwrapped module so the attack's input-only gradient skips DDP's reducer.
        A model with ``input_bounds`` (None: unbounded, e.g. cached feature
        maps) bounds its FGSM inputs by them instead of [0, 1]. ``teacher``: teacher probabilities [B, C]
        for the ``distill`` term.
        """
        cfg = self.config
        output = model(images, landmarks)
        terms = {}
        if cfg.weight('focal'):
            terms['focal'] = self.focal(output.logits, targets)
        if cfg.weight('geometry') and landmarks is not None:
            if output.landmarks is None:
                raise ValueError('geometry loss needs a model with landmark_head=True')
            terms['geometry'] = geometric_constraint_loss(output.landmarks, landmarks, landmark_mask)
        if cfg.weight('adversarial') and discriminator is not None and output.landmarks is not None:
            terms['adversarial'] = generator_adversarial_loss(discriminator, output.landmarks)
        if cfg.weight('distill'):
            if teacher is None:
                raise ValueError('the distill loss needs teacher probabilities: set data.teacher_probs')
            terms['distill'] = distillation_loss(output.logits, teacher, cfg.distill_temperature)
        if cfg.weight('reconstruction'):
            if getattr(output, 'reconstruction', None) is None:
                raise ValueError('reconstruction loss needs a model that reconstructs the face (PCNN)')
            terms['reconstruction'] = F.mse_loss(output.reconstruction.float(), images.float())
        if cfg.weight('fgsm'):
            attacked = model if attack_model is None else attack_model
            adversarial_images = fgsm(lambda x: attacked(x, landmarks).logits, images, targets, cfg.fgsm_eps,
                                      bounds=getattr(attacked, 'input_bounds', (0.0, 1.0)))
            terms['fgsm'] = self.focal(model(adversarial_images, landmarks).logits, targets)
        total = sum(cfg.weight(name) * value for name, value in terms.items())
        return total, {name: value.detach() for name, value in terms.items()}, output
