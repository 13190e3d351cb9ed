"""``fer-train``: train a model (CNN-SE-GCN by default; ``architecture:`` efficientnet_b2 or pcnn) from a YAML config.

``fer-train --config config/train_fer2013.yaml [--resume] [--set train.epochs=5 ...]``.
Each epoch writes ``<output_dir>/last.pt`` (model, discriminator, optimizers,
scheduler, AMP scaler, RNG states, epoch; read with weights_only) and logs to
``metrics.csv`` and TensorBoard; the best epoch by the validation split's
``train.select_metric`` is saved as ``best.safetensors`` + ``best.json``.
The first ``train.warmup_epochs`` form a warm-up stage: learning rate rising
from 10%, optionally its own augmentation and no dropout (see Trainer.start_epoch).
``train.steps_per_epoch`` caps the batches of an epoch (each epoch draws its own
shuffled batches), for fine-tuning runs shorter than one pass over the data.
Under torchrun (WORLD_SIZE > 1) it trains with DistributedDataParallel.
"""
import argparse
import csv
import itertools
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from torchvision.ops import StochasticDepth
from tqdm import tqdm

from fer_ros.data.augment import FaceAugment, FeatureAugment
from fer_ros.data.datasets import FaceDataset, join_samples, load_samples, prepare_faces
from fer_ros.data.feature_cache import AUGMENTATIONS, CachedFeatureDataset, FeatureCache, cached_features
from fer_ros.data.landmarks import LandmarkCache
from fer_ros.data.packed import unpack_faces
from fer_ros.model.checkpoint import (ARCHITECTURES, load_model, load_training_state, save_checkpoint,
                                     save_training_state)
from fer_ros.model.cnn_se_gcn import GeometryDiscriminator
from fer_ros.model.inference import resolve_device
from fer_ros.model.losses import LossConfig, TrainingObjective, discriminator_loss
from fer_ros.training import console_script
from fer_ros.training.device_batches import DeviceFaceBatches
from fer_ros.training.distill import teacher_probabilities
from fer_ros.training.evaluate import classification_report, predict_loader

STOCHASTIC_REGULARIZERS = (nn.Dropout, StochasticDepth)
TRAIN_DEFAULTS = {'epochs': 30, 'batch_size': 64, 'lr': 1e-3, 'weight_decay': 5e-4, 'discriminator_lr': 2e-4,
                  'num_workers': 2, 'device': 'auto', 'amp': True, 'select_metric': 'accuracy',
                  'half_checkpoint': False, 'warmup_epochs': 0, 'warmup_augment': None, 'warmup_dropout': True,
                  'lr_scale': {}, 'data_on_device': False, 'steps_per_epoch': None}


def load_config(path, overrides=()):
    """YAML config with ``section.key=value`` overrides (values parsed as YAML)."""
    config = yaml.safe_load(Path(path).read_text())
    for override in overrides:
        key, _, value = override.partition('=')
        section = config
        *parents, leaf = key.split('.')
        for parent in parents:
            section = section.setdefault(parent, {})
        section[leaf] = yaml.safe_load(value)
    config['train'] = {**TRAIN_DEFAULTS, **config.get('train', {})}
    return config


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def rng_state():
    """All RNG states as weights_only-loadable objects."""
    numpy_state = np.random.get_state()
    return {'python': random.getstate(), 'torch': torch.get_rng_state(),
            'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            'numpy': (numpy_state[0], torch.from_numpy(numpy_state[1].copy()), *numpy_state[2:])}


def set_rng_state(state):
    python_state = state['python']
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    name, keys, *rest = state['numpy']
    np.random.set_state((name, keys.numpy(), *rest))


def limit_per_class(samples, limit, seed):
    """At most ``limit`` samples of each class (a fixed random choice), for quick runs."""
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(samples.labels == c))[:limit] for c in range(len(samples.class_names))]
    return samples.subset(np.sort(np.concatenate(keep)))


def model_config_of(config, num_classes):
    """(config class instance, model class) of ``config['architecture']`` (default cnn_se_gcn)."""
    architecture = config.get('architecture', 'cnn_se_gcn')
    if architecture not in ARCHITECTURES:
        raise ValueError(f'unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}')
    config_class, model_class = ARCHITECTURES[architecture]
    return config_class.from_dict({**config.get('model', {}), 'num_classes': num_classes}), model_class


def stratified_holdout(samples, fraction, seed):
    """(train, validation) split of samples, stratified by label (e.g. 0.125 for 87.5% / 12.5%)."""
    from sklearn.model_selection import train_test_split
    indices = np.arange(len(samples))
    train, held_out = train_test_split(indices, test_size=fraction, stratify=samples.labels, random_state=seed)
    return samples.subset(np.sort(train)), samples.subset(np.sort(held_out))


def training_samples(kind, path, splits):
    """The samples of ``train_split``: one split, or several joined (``[train, val]``: a train+val refit,
    whose validation figures are then on training images; export its last epoch)."""
    if isinstance(splits, str):
        return load_samples(kind, path, splits)
    return join_samples([load_samples(kind, path, split) for split in splits])


def load_data(data_config, model_config, seed):
    """(train PreparedFaces, val PreparedFaces) as the config describes; fills the landmark cache."""
    kind, path = data_config['kind'], data_config['path']
    if kind == 'packed':
        if data_config.get('teacher_probs'):
            raise ValueError('data.teacher_probs needs the dataset itself (teachers are matched by image file)')
        if model_config.needs_landmarks:
            raise ValueError('packed faces hold no landmarks: use a model without them '
                             '(use_gcn: false, landmark_head: false) or the dataset with its landmark cache')
        if not isinstance(data_config.get('train_split', 'train'), str):
            raise ValueError('packed faces: train_split must name one split')
        return (unpack_faces(path, data_config.get('train_split', 'train')),
                unpack_faces(path, data_config.get('val_split', 'val')))
    train = data_config.get('train_samples') or training_samples(kind, path, data_config.get('train_split', 'train'))
    if data_config.get('val_from_train'):
        train, val = stratified_holdout(train, data_config['val_from_train'], seed)
    else:
        val = data_config.get('val_samples') or load_samples(kind, path, data_config.get('val_split', 'val'))
    if data_config.get('max_per_class'):
        train = limit_per_class(train, data_config['max_per_class'], seed)
        val = limit_per_class(val, data_config['max_per_class'], seed)
    cache = None
    if data_config.get('landmark_cache'):
        cache = LandmarkCache(data_config['landmark_cache'])
        cache.extract(list(train.images) + list(val.images), log=lambda line: print(line, flush=True))
    elif model_config.needs_landmarks:
        raise ValueError('this model config uses landmarks: set data.landmark_cache')
    size = model_config.input_size
    train_faces = prepare_faces(train, cache, size)
    if data_config.get('teacher_probs'):
        train_faces.teacher = teacher_probabilities(data_config['teacher_probs'], train.images, train.class_names,
                                                    data_config.get('teacher_models'))
    return train_faces, prepare_faces(val, cache, size)


def lr_schedule(optimizer, epochs, warmup_epochs):
    """Cosine decay per epoch, after a linear warm-up from 10% of the LR when warmup_epochs > 0."""
    scheduler = torch.optim.lr_scheduler
    cosine = scheduler.CosineAnnealingLR(optimizer, max(1, epochs - warmup_epochs))
    if not warmup_epochs:
        return cosine
    warmup = scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=warmup_epochs)
    return scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_epochs])


class Trainer:
    """One training run: model, discriminator, optimizers, loaders, logs and checkpoints."""

    def __init__(self, config, train_faces, val_faces):
        self.config = config
        self.train_config = config['train']
        self.distributed = int(os.environ.get('WORLD_SIZE', '1')) > 1
        self.rank = dist.get_rank() if self.distributed else 0
        self.device = resolve_device(self.train_config['device'])
        if self.distributed and self.device.type == 'cuda':
            self.device = torch.device('cuda', int(os.environ.get('LOCAL_RANK', 0)))
            torch.cuda.set_device(self.device)
        self.output_dir = Path(config['output_dir'])
        self.class_names = train_faces.class_names
        self.model_config, model_class = model_config_of(config, len(self.class_names))
        self.loss_config = LossConfig.from_dict(config.get('loss', {}))
        self.model = model_class(self.model_config).to(self.device)
        if config.get('init_from'):
            initialise_from(self.model, self.class_names, config['init_from'])
        landmark_head = getattr(self.model_config, 'landmark_head', False)
        self.discriminator = None
        if self.loss_config.weight('adversarial') and landmark_head:
            self.discriminator = GeometryDiscriminator(self.model_config.num_landmarks).to(self.device)
            self.discriminator_optimizer = torch.optim.Adam(self.discriminator.parameters(),
                                                            lr=self.train_config['discriminator_lr'],
                                                            betas=(0.5, 0.999))
        self.objective = TrainingObjective(self.loss_config, train_faces_class_counts(train_faces)).to(self.device)
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, self.train_config['lr'],
                                                            self.train_config['lr_scale']),
                                           lr=self.train_config['lr'], weight_decay=self.train_config['weight_decay'])
        self.scheduler = lr_schedule(self.optimizer, self.train_config['epochs'], self.train_config['warmup_epochs'])
        self.amp = bool(self.train_config['amp']) and self.device.type == 'cuda'
        self.scaler = torch.amp.GradScaler('cuda', enabled=self.amp)
        # The module trained: the whole model, or its head on cached trunk features (data.feature_cache).
        self.fit_model = self.model
        feature_cache = config['data'].get('feature_cache')
        if feature_cache:
            if not hasattr(self.model, 'trunk'):
                raise ValueError(f'data.feature_cache needs an architecture with a frozen trunk '
                                 f'(cnn_se_gcn_facemesh), not {self.model.architecture}')
            self.fit_model = self.model.head
        self.train_model = self.fit_model
        if self.distributed:
            geometry_used = self.loss_config.weight('geometry') or self.discriminator is not None
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                self.fit_model, device_ids=[self.device.index] if self.device.type == 'cuda' else None,
                find_unused_parameters=bool(landmark_head and not geometry_used))
        augment_class = FeatureAugment if feature_cache else FaceAugment
        self.augment = augment_class(**self.config.get('augment', {}))
        warmup_augment = self.train_config['warmup_augment']
        self.warmup_augment = self.augment if warmup_augment is None else augment_class(**warmup_augment)
        if feature_cache:
            cache = FeatureCache(feature_cache, self.model.trunk, self.model_config.input_size)
            log = (lambda line: print(line, flush=True)) if self.rank == 0 else (lambda line: None)
            self.train_set = CachedFeatureDataset(train_faces, cached_features(cache, train_faces, AUGMENTATIONS, log),
                                                  self.augment)
            val_set = CachedFeatureDataset(val_faces, cached_features(cache, val_faces, ('none',), log))
        elif self.train_config['data_on_device']:
            self.train_set = DeviceFaceBatches(train_faces, self.augment, self.device, self.train_config['batch_size'])
            val_set = FaceDataset(val_faces)
        else:
            self.train_set = FaceDataset(train_faces, self.augment)
            val_set = FaceDataset(val_faces)
        self.val_loader = DataLoader(val_set, batch_size=self.train_config['batch_size'] * 2,
                                     num_workers=self.train_config['num_workers'])
        self.epoch = 0
        self.best = {'epoch': None, self.train_config['select_metric']: -1.0}

    def start_epoch(self):
        """Training modes and augmentation of this epoch's stage: the warm-up stage may use its own
        augmentation (``train.warmup_augment``) and run without dropout and stochastic depth
        (``train.warmup_dropout: false``); BatchNorm trains in both stages."""
        self.fit_model.train()
        warming_up = self.epoch < self.train_config['warmup_epochs']
        self.train_set.augment = self.warmup_augment if warming_up else self.augment
        if warming_up and not self.train_config['warmup_dropout']:
            for module in self.fit_model.modules():
                if isinstance(module, STOCHASTIC_REGULARIZERS):
                    module.eval()

    def train_loader(self):
        """Loader whose order depends only on (seed, epoch), so a resumed run repeats it."""
        seed = self.config.get('seed', 0) + self.epoch
        if isinstance(self.train_set, DeviceFaceBatches):
            if self.distributed:
                raise ValueError('train.data_on_device is for one device, not distributed training')
            return self.train_set.epoch(seed)
        if self.distributed:
            sampler = DistributedSampler(self.train_set, shuffle=True, seed=self.config.get('seed', 0))
            sampler.set_epoch(self.epoch)
            return DataLoader(self.train_set, batch_size=self.train_config['batch_size'], sampler=sampler,
                              num_workers=self.train_config['num_workers'], drop_last=True)
        return DataLoader(self.train_set, batch_size=self.train_config['batch_size'], shuffle=True, drop_last=True,
                          num_workers=self.train_config['num_workers'],
                          generator=torch.Generator().manual_seed(seed))

    def discriminator_step(self, landmarks, mask, reconstructed):
        real = landmarks[mask] if mask.any() else landmarks
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        loss = discriminator_loss(self.discriminator, real, reconstructed.float(), self.loss_config.r1_weight)
        loss.backward()
        if self.distributed:
            for parameter in self.discriminator.parameters():
                dist.all_reduce(parameter.grad)
                parameter.grad /= dist.get_world_size()
        self.discriminator_optimizer.step()
        return loss.detach()

    def train_epoch(self):
        self.start_epoch()
        totals, steps = {}, 0
        loader, steps_cap = self.train_loader(), self.train_config['steps_per_epoch']
        batches = itertools.islice(loader, steps_cap) if steps_cap else loader
        for batch in tqdm(batches, desc=f'epoch {self.epoch + 1}', total=steps_cap, disable=self.rank != 0,
                          leave=False):
            images = batch['image'].to(self.device, non_blocking=True)
            landmarks = batch['landmarks'].to(self.device, non_blocking=True)
            mask = batch['landmark_mask'].to(self.device)
            labels = batch['label'].to(self.device)
            teacher = batch['teacher'].to(self.device) if 'teacher' in batch else None
            with torch.autocast(self.device.type, enabled=self.amp):
                loss, terms, output = self.objective(self.train_model, images, landmarks, labels, mask,
                                                     self.discriminator, attack_model=self.fit_model,
                                                     teacher=teacher)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.discriminator is not None:
                terms['discriminator'] = self.discriminator_step(landmarks, mask, output.landmarks.detach())
            terms['loss'] = loss.detach()
            for name, value in terms.items():
                totals[name] = totals.get(name, 0.0) + float(value)
            steps += 1
        self.scheduler.step()
        return {f'train_{name}': value / max(steps, 1) for name, value in totals.items()}

    def validate(self):
        probabilities, labels = predict_loader(self.fit_model, self.val_loader, self.device)
        report = classification_report(probabilities, labels, self.class_names)
        return {'val_accuracy': report['accuracy'], 'val_macro_f1': report['macro_f1']}

    def training_state(self):
        state = {'model': self.model.state_dict(), 'optimizer': self.optimizer.state_dict(),
                 'scheduler': self.scheduler.state_dict(), 'scaler': self.scaler.state_dict(),
                 'epoch': self.epoch, 'best': self.best, 'rng': rng_state()}
        if self.discriminator is not None:
            state['discriminator'] = self.discriminator.state_dict()
            state['discriminator_optimizer'] = self.discriminator_optimizer.state_dict()
        return state

    def resume(self, path):
        state = load_training_state(path, map_location=self.device)
        self.model.load_state_dict(state['model'])
        self.optimizer.load_state_dict(state['optimizer'])
        self.scheduler.load_state_dict(state['scheduler'])
        self.scaler.load_state_dict(state['scaler'])
        if self.discriminator is not None:
            self.discriminator.load_state_dict(state['discriminator'])
            self.discriminator_optimizer.load_state_dict(state['discriminator_optimizer'])
        self.epoch, self.best = state['epoch'], state['best']
        set_rng_state(state['rng'])

    def metadata(self, metrics):
        data = {key: str(value) for key, value in self.config['data'].items() if not key.endswith('_samples')}
        return {'name': self.config.get('name', self.output_dir.name), 'labels': list(self.class_names),
                'training_data': data, 'metrics': metrics, 'loss': self.config.get('loss', {}),
                'epoch': self.epoch, 'seed': self.config.get('seed', 0),
                **({'init_from': str(self.config['init_from'])} if self.config.get('init_from') else {})}

    def fit(self):
        """Train up to ``train.epochs``; returns the best validation metrics."""
        writer = None
        metric = self.train_config['select_metric']
        if self.rank == 0:
            from torch.utils.tensorboard import SummaryWriter
            self.output_dir.mkdir(parents=True, exist_ok=True)
            writer = SummaryWriter(self.output_dir / 'tensorboard', purge_step=self.epoch + 1)
        while self.epoch < self.train_config['epochs']:
            start = time.monotonic()
            row = {'lr': self.optimizer.param_groups[0]['lr'], **self.train_epoch()}
            self.epoch += 1
            if self.rank == 0:
                row.update(self.validate())
                row = {'epoch': self.epoch, **row, 'seconds': round(time.monotonic() - start, 1)}
                self.log(row, writer)
                if row[f'val_{metric}'] > self.best[metric]:
                    self.best = {'epoch': self.epoch, metric: row[f'val_{metric}'],
                                 **{k: v for k, v in row.items() if k.startswith('val_')}}
                    save_checkpoint(self.output_dir / 'best', self.model, self.metadata(self.best),
                                    half=self.train_config['half_checkpoint'])
                save_training_state(self.output_dir / 'last.pt', self.training_state())
            if self.distributed:
                dist.barrier()
        if writer is not None:
            writer.close()
        return self.best

    def log(self, row, writer):
        path = self.output_dir / 'metrics.csv'
        new = not path.exists()
        with open(path, 'a', newline='') as handle:
            csv_writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                csv_writer.writeheader()
            csv_writer.writerow(row)
        for name, value in row.items():
            if name != 'epoch':
                writer.add_scalar(name, value, self.epoch)
        print(' '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}' for k, v in row.items()), flush=True)


def parameter_groups(model, lr, lr_scale):
    """Optimizer groups: parameters whose name starts with a prefix of ``lr_scale`` ({prefix: factor},
    e.g. pretrained stages at a tenth of the learning rate) get lr * factor; the rest lr."""
    groups = {prefix: [] for prefix in lr_scale}
    rest = []
    for name, parameter in model.named_parameters():
        prefix = next((prefix for prefix in lr_scale if name.startswith(prefix)), None)
        (groups[prefix] if prefix is not None else rest).append(parameter)
    empty = [prefix for prefix, parameters in groups.items() if not parameters]
    if empty:
        raise ValueError(f'train.lr_scale prefixes {empty} match no parameter of the model')
    return [{'params': rest, 'lr': lr}] + [{'params': groups[prefix], 'lr': lr * float(factor)}
                                           for prefix, factor in lr_scale.items()]


def initialise_from(model, class_names, path):
    """Start from a trained checkpoint of the same architecture (fine-tuning): every weight of the same
    name and shape; the classifier's rows matched by label name (new labels keep their fresh rows)."""
    source, metadata = load_model(path)
    if source.architecture != model.architecture:
        raise ValueError(f'init_from {path} is a {source.architecture} model, not {model.architecture}')
    own = model.state_dict()
    source_rows = {label: row for row, label in enumerate(metadata['labels'])}
    loaded = {}
    for key, value in source.state_dict().items():
        if key not in own:
            continue
        if key.split('.')[-2:-1] == ['classifier']:
            value = torch.stack([value[source_rows[label]] if label in source_rows else own[key][row]
                                 for row, label in enumerate(class_names)])
        if value.shape == own[key].shape:
            loaded[key] = value
    model.load_state_dict(loaded, strict=False)
    new_labels = [label for label in class_names if label not in source_rows]
    print(f'initialised {len(loaded)}/{len(own)} tensors from {path}'
          + (f'; new classifier rows for {new_labels}' if new_labels else ''), flush=True)


def train_faces_class_counts(faces):
    return np.bincount(faces.labels, minlength=len(faces.class_names))


def train(config, resume=False):
    """Train as configured (dict from :func:`load_config`); returns the best validation metrics."""
    distributed = int(os.environ.get('WORLD_SIZE', '1')) > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group('nccl' if torch.cuda.is_available() else 'gloo')
    seed_everything(config.get('seed', 0))
    model_config, _ = model_config_of(config, num_classes=1)
    train_faces, val_faces = load_data(config['data'], model_config, config.get('seed', 0))
    trainer = Trainer(config, train_faces, val_faces)
    last = Path(config['output_dir']) / 'last.pt'
    if resume and last.exists():
        trainer.resume(last)
    try:
        return trainer.fit()
    finally:
        if distributed:
            dist.destroy_process_group()


def main(argv=None):
    parser = argparse.ArgumentParser(prog='fer-train', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', required=True, help='YAML config (see config/train_fer2013.yaml)')
    parser.add_argument('--resume', action='store_true', help='continue from <output_dir>/last.pt')
    parser.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE',
                        help='override a config entry, e.g. train.epochs=5 (repeatable)')
    args = parser.parse_args(argv)
    best = train(load_config(args.config, args.overrides), resume=args.resume)
    print(f'best: {best}')
    return best


cli = console_script(main)


if __name__ == '__main__':
    main()
