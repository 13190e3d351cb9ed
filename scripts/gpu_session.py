"""Train pixel CNN-SE teachers on one GPU within a fixed time, and write their soft labels.

For a lent GPU machine with a time limit (see scripts/gpu_session.sh): FER-2013
comes packed (``fer-pack-faces``), is unpacked once and held on the GPU
(``train.data_on_device``). Each seed gets an equal share of the time: a second calibration
epoch (the first pays for CUDA's set-up) measures the epoch time, then the run is trained for as many epochs as
fit (cosine schedule over them), selected on val as ``fer-train`` does.
Afterwards every run's best model predicts train and val, unflipped and
flipped, into ``teacher_probs.npz`` (keyed by image content: the sha1 of the
image file, as the landmark cache keys it) for distillation on the CPU.

  python scripts/gpu_session.py --packed .gpu/fer2013_faces.npz.xz --out /tmp/gpu_runs --budget 380
"""
import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from fer_ros.data.packed import read_packed, unpack_faces
from fer_ros.model.checkpoint import load_model
from fer_ros.training.train import Trainer, load_config, seed_everything

CONFIG = Path(__file__).resolve().parents[1] / 'config' / 'train_fer2013_gpu_pixel.yaml'


def content_keys(arrays, split):
    """sha1 of each packed image file of ``split`` (the landmark cache's content key), in unpack order."""
    index = [str(name) for name in arrays['split_names']].index(split)
    offsets, encoded = arrays['offsets'], arrays['encoded']
    return np.array([hashlib.sha1(encoded[offsets[i]:offsets[i + 1]].tobytes()).hexdigest()
                     for i in np.flatnonzero(arrays['split_of'] == index)])


@torch.no_grad()
def probabilities(model, images, device, flip, batch_size=1024):
    """Softmax [N, C] of uint8 crops [N, S, S] (mirrored when ``flip``)."""
    model.eval()
    out = []
    for begin in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[begin:begin + batch_size]).to(device).float().div_(255.0)[:, None]
        if flip:
            batch = batch.flip(-1)
        with torch.autocast(device.type, enabled=device.type == 'cuda'):
            out.append(torch.softmax(model(batch).logits.float(), dim=1).cpu())
    return torch.cat(out).numpy()


def run_config(base, name, seed, out_dir, epochs):
    """A copy of the base config for one run."""
    config = json.loads(json.dumps(base))
    config['train'] = {**config['train'], 'epochs': epochs}
    config.update(name=name, seed=seed, output_dir=str(out_dir / name))
    return config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--packed', type=Path, required=True)
    parser.add_argument('--out', type=Path, required=True)
    parser.add_argument('--budget', type=float, required=True, help='seconds for all training runs')
    parser.add_argument('--max-epochs', type=int, default=120)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1],
                        help='one run per seed (se_resnet18_s<seed>), sharing the budget equally')
    parser.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE',
                        help='override an entry of config/train_fer2013_gpu_pixel.yaml (repeatable)')
    args = parser.parse_args(argv)
    torch.backends.cudnn.benchmark = True
    start = time.monotonic()
    base = load_config(CONFIG, [f'data.path={args.packed}', *args.overrides])
    train_faces = unpack_faces(args.packed, 'train')
    val_faces = unpack_faces(args.packed, 'val')
    print(f'unpacked {len(train_faces.labels)} + {len(val_faces.labels)} faces in {time.monotonic() - start:.1f} s',
          flush=True)
    summary = []
    for seed in args.seeds:
        name = f'se_resnet18_s{seed}'
        run_start = time.monotonic()
        budget = args.budget / len(args.seeds)
        seed_everything(seed)
        probe = Trainer(run_config(base, name + '_calibration', seed, args.out, 2), train_faces, val_faces)
        probe.train_epoch()  # the first epoch also pays for CUDA's and cuDNN's set-up (20 s on an H200)
        probe_start = time.monotonic()
        probe.train_epoch()
        epoch_seconds = time.monotonic() - probe_start
        probe_start = time.monotonic()
        probe.validate()
        val_seconds = time.monotonic() - probe_start
        del probe
        remaining = budget - (time.monotonic() - run_start)
        epochs = int(max(1, min(args.max_epochs, remaining // (epoch_seconds + val_seconds))))
        print(f'{name}: epoch {epoch_seconds:.2f} s + val {val_seconds:.2f} s -> {epochs} epochs', flush=True)
        seed_everything(seed)
        trainer = Trainer(run_config(base, name, seed, args.out, epochs), train_faces, val_faces)
        best = trainer.fit()
        summary.append({'name': name, 'epochs': epochs, 'epoch_seconds': epoch_seconds,
                        'seconds': time.monotonic() - run_start, 'best': best})
        print(f'{name}: best {best} in {time.monotonic() - run_start:.0f} s', flush=True)
    arrays = read_packed(args.packed)
    device = torch.device(base['train']['device'] if base['train']['device'] != 'auto' else
                          ('cuda' if torch.cuda.is_available() else 'cpu'))
    soft = {'class_names': np.array(train_faces.class_names), 'model_names': np.array([r['name'] for r in summary])}
    for split, faces in (('train', train_faces), ('val', val_faces)):
        soft[f'{split}_keys'] = content_keys(arrays, split)
        soft[f'{split}_labels'] = faces.labels
        per_model = []
        for row in summary:
            model, _ = load_model(args.out / row['name'] / 'best.safetensors', device)
            per_model.append([probabilities(model, faces.images, device, flip) for flip in (False, True)])
        soft[f'{split}_probs'] = np.array(per_model, np.float16)  # [models, (plain, flipped), N, C]
        if split == 'val':
            ensemble = np.asarray(per_model, np.float32).mean(axis=(0, 1))
            accuracy = float((ensemble.argmax(1) == faces.labels).mean())
            summary.append({'name': 'ensemble (all runs, plain + flipped)', 'val_accuracy': accuracy})
            print(f'ensemble val accuracy {accuracy:.4f}', flush=True)
    np.savez_compressed(args.out / 'teacher_probs.npz', **soft)
    (args.out / 'summary.json').write_text(json.dumps(summary, indent=1))
    print(f'done in {time.monotonic() - start:.0f} s', flush=True)


if __name__ == '__main__':
    main()
