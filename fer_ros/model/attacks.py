"""FGSM and PGD adversarial examples on images in [0, 1] (L-infinity ball).

``model_fn`` maps an image batch to logits (close over the landmarks to
attack the image only). Gradients are taken with ``torch.autograd.grad`` on
the input only, so model parameter gradients are left untouched; the model's
train/eval mode is not changed. Results are detached and clamped to [0, 1]
(``bounds``; None for inputs without bounds, such as feature maps).
"""
import torch
import torch.nn.functional as F


def _input_gradient(model_fn, x, y, loss_fn):
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(model_fn(x), y)
        (gradient,) = torch.autograd.grad(loss, x)
    return gradient


def fgsm(model_fn, x, y, eps, loss_fn=F.cross_entropy, bounds=(0.0, 1.0)):
    """One signed-gradient step of size ``eps`` (in the input's units) that raises the loss."""
    gradient = _input_gradient(model_fn, x, y, loss_fn)
    attacked = x.detach() + eps * gradient.sign()
    return attacked if bounds is None else attacked.clamp(*bounds)


def pgd(model_fn, x, y, eps, alpha, steps, random_start=True, loss_fn=F.cross_entropy):
    """Projected gradient ascent: ``steps`` signed steps of ``alpha``, kept within ``eps`` of x."""
    x = x.detach()
    adversarial = x.clone()
    if random_start:
        adversarial = (adversarial + torch.empty_like(x).uniform_(-eps, eps)).clamp(0.0, 1.0)
    for _ in range(steps):
        gradient = _input_gradient(model_fn, adversarial, y, loss_fn)
        adversarial = adversarial + alpha * gradient.sign()
        adversarial = torch.min(torch.max(adversarial, x - eps), x + eps).clamp(0.0, 1.0)
    return adversarial.detach()


@torch.no_grad()
def robustness_report(model_fn, x, eps=2 / 255, pgd_steps=5, y=None):
    """Fraction of predictions unchanged under FGSM and PGD at ``eps``.

    Reference labels ``y`` default to the clean predictions, so no ground
    truth is needed (a self-check of a deployed model).
    """
    clean = model_fn(x).argmax(dim=1)
    y = clean if y is None else y
    report = {'eps': eps, 'clean_agreement': (clean == y).float().mean().item()}
    fgsm_x = fgsm(model_fn, x, y, eps)
    pgd_x = pgd(model_fn, x, y, eps, alpha=eps / 4, steps=pgd_steps)
    report['fgsm_agreement'] = (model_fn(fgsm_x).argmax(dim=1) == y).float().mean().item()
    report['pgd_agreement'] = (model_fn(pgd_x).argmax(dim=1) == y).float().mean().item()
    return report
