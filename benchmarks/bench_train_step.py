"""Training compute per batch on this machine: forward + all loss terms + backward + optimizer steps.

Synthetic batches (random images and landmarks) of the configured size go
through the same TrainingObjective and discriminator step as fer-train, so the
figure is the model's compute per batch without data loading; multiply by the
batches per epoch (FER-2013 train: 28,709 / batch size) for an epoch estimate.

  .venv/bin/python benchmarks/bench_train_step.py --config config/train_fer2013.yaml
  .venv/bin/python benchmarks/bench_train_step.py --config config/train_fer2013.yaml \
      --set 'model.cnn_widths=[16,32,64,128]' --set loss.weights.fgsm=0
"""

import argparse
import time

import numpy as np
import torch

from fer_ros.model.cnn_se_gcn import CNNSEGCN, CNNSEGCNConfig, GeometryDiscriminator
from fer_ros.model.inference import resolve_device
from fer_ros.model.losses import LossConfig, TrainingObjective, discriminator_loss
from fer_ros.training.train import load_config

FER2013_TRAIN_IMAGES = 28_709


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', required=True)
    parser.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE')
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--device', default='auto')
    args = parser.parse_args(argv)
    config = load_config(args.config, args.overrides)
    device = resolve_device(args.device)
    model_config = CNNSEGCNConfig.from_dict({**config.get('model', {}), 'num_classes': 7})
    loss_config = LossConfig.from_dict(config.get('loss', {}))
    model = CNNSEGCN(model_config).to(device).train()
    objective = TrainingObjective(loss_config, np.ones(7)).to(device)
    discriminator = None
    if loss_config.weight('adversarial') and model_config.landmark_head:
        discriminator = GeometryDiscriminator(model_config.num_landmarks).to(device)
        discriminator_optimizer = torch.optim.Adam(discriminator.parameters(), lr=2e-4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = config['train']['batch_size']
    size, points = model_config.input_size, model_config.num_landmarks
    images = torch.rand(batch, 1, size, size, device=device)
    landmarks = torch.rand(batch, points, 3, device=device)
    targets = torch.randint(0, 7, (batch,), device=device)
    mask = torch.ones(batch, dtype=torch.bool, device=device)

    def step():
        loss, _, output = objective(model, images, landmarks, targets, mask, discriminator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if discriminator is not None:
            discriminator_optimizer.zero_grad(set_to_none=True)
            discriminator_loss(discriminator, landmarks, output.landmarks.detach().float(),
                               loss_config.r1_weight).backward()
            discriminator_optimizer.step()
        if device.type == 'cuda':
            torch.cuda.synchronize()

    step()  # warm-up
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    per_batch = float(np.median(times))
    batches = FER2013_TRAIN_IMAGES // batch
    parameters = sum(p.numel() for p in model.parameters())
    print(f'widths {list(model_config.cnn_widths)}, {parameters:,} parameters, loss weights {loss_config.weights}')
    print(f'{device}, {torch.get_num_threads()} threads: {per_batch:.2f} s per batch of {batch} '
          f'(median of {args.steps}); FER-2013 epoch ({batches} batches) ~ {per_batch * batches / 60:.1f} min')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
