"""Face-mesh trunk features of aligned crops, cached on disk (float16).

Heads on face-pretrained features train for many epochs in minutes when the
frozen trunk (:class:`fer_ros.model.face_mesh_features.FaceMeshTrunk`) runs
once per image and augmentation instead of once per step. Entries are keyed
by the crop's content (shape and pixels) and the augmentation applied before
the trunk (``none`` or ``hflip``); the folder's ``extractor.json`` records
what made them (graph checksum, stage, crop size, weights), and a folder made
by another extractor is refused rather than read.

Layout: ``chunk_NNNNN.npy`` (float16 [n, C, H, W]) and ``chunk_NNNNN.keys.npy``
(the n keys), each written atomically, keys last: an interrupted extraction
resumes at the first missing entry.
"""
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fer_ros.data.landmarks import content_key
from fer_ros.vision.face_mesh_files import FACE_LANDMARK_SHA256, GRAPH_INPUT_SIZE
from fer_ros.vision.mirror import hflip_landmarks

AUGMENTATIONS = ('none', 'hflip')
FORMAT_VERSION = 1


class StaleFeatureCacheError(ValueError):
    """A feature cache folder was made by another extractor than the one asked for."""


def extractor_fingerprint(trunk, crop_size):
    """What determines a trunk's features: graph, stage, crop and graph input sizes, pretrained or not."""
    fingerprint = {'format_version': FORMAT_VERSION, 'graph_sha256': FACE_LANDMARK_SHA256, 'stage': trunk.stage,
                   'crop_size': int(crop_size), 'graph_input': GRAPH_INPUT_SIZE, 'resize': 'bilinear'}
    if not trunk.pretrained:
        state = torch.cat([tensor.flatten().float().cpu() for tensor in trunk.section.buffers()])
        fingerprint['random_weights_sha1'] = hashlib.sha1(state.numpy().tobytes()).hexdigest()
    return fingerprint


def crop_key(crop, augmentation):
    """Key of one uint8 crop under one augmentation."""
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f'augmentation must be one of {AUGMENTATIONS}, got {augmentation!r}')
    return content_key(np.asarray(crop, dtype=np.uint8)) + ':' + augmentation


def augmented(crops, augmentation):
    """The crops [N, S, S] as the trunk sees them under ``augmentation``."""
    return np.ascontiguousarray(crops[:, :, ::-1]) if augmentation == 'hflip' else crops


class FeatureCache:
    """Trunk outputs of crops, looked up by content; ``extract`` fills what is missing."""

    def __init__(self, cache_dir, trunk, crop_size=48):
        self.cache_dir = Path(cache_dir)
        self.trunk = trunk
        self.crop_size = crop_size
        self.fingerprint = extractor_fingerprint(trunk, crop_size)
        manifest = self.cache_dir / 'extractor.json'
        if manifest.is_file():
            recorded = json.loads(manifest.read_text())
            if recorded != self.fingerprint:
                changed = sorted(k for k in set(recorded) | set(self.fingerprint)
                                 if recorded.get(k) != self.fingerprint.get(k))
                raise StaleFeatureCacheError(f'feature cache {self.cache_dir} was made by another extractor '
                                             f'(differs in {changed}): use another folder or delete it')
        self._index = {}      # key -> (chunk number, row)
        self._chunks = []     # memory-mapped float16 arrays
        for keys_path in sorted(self.cache_dir.glob('chunk_*.keys.npy')):
            features = np.load(keys_path.with_name(keys_path.name.replace('.keys', '')), mmap_mode='r')
            for row, key in enumerate(np.load(keys_path)):
                self._index[str(key)] = (len(self._chunks), row)
            self._chunks.append(features)

    def __len__(self):
        return len(self._index)

    def lookup(self, crops, augmentation='none'):
        """float16 tensor [N, C, H, W] of the crops' cached features; KeyError names the first missing one."""
        rows = []
        for index, crop in enumerate(crops):
            key = crop_key(crop, augmentation)
            if key not in self._index:
                raise KeyError(f'crop {index} ({augmentation}) is not in feature cache {self.cache_dir}: '
                               'run extract() first')
            rows.append(self._index[key])
        if not rows:
            return torch.zeros((0,), dtype=torch.float16)
        first = self._chunks[rows[0][0]]
        out = np.empty((len(rows), *first.shape[1:]), np.float16)
        for position, (chunk, row) in enumerate(rows):
            out[position] = self._chunks[chunk][row]
        return torch.from_numpy(out)

    @torch.no_grad()
    def extract(self, crops, augmentations=AUGMENTATIONS, batch_size=64, chunk_size=4096, log=print):
        """Compute and store the features of every uncached (crop, augmentation); returns the count added."""
        crops = np.asarray(crops, np.uint8)
        if crops.ndim != 3 or crops.shape[1:] != (self.crop_size, self.crop_size):
            raise ValueError(f'crops must be uint8 [N, {self.crop_size}, {self.crop_size}], got {crops.shape}')
        todo = {}
        for augmentation in augmentations:
            for index, crop in enumerate(crops):
                key = crop_key(crop, augmentation)
                if key not in self._index:
                    todo.setdefault(key, (index, augmentation))
        todo = list(todo.items())
        if not todo:
            return 0
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        (self.cache_dir / 'extractor.json').write_text(json.dumps(self.fingerprint, indent=2))
        self.trunk.eval()
        device = next(self.trunk.buffers()).device
        start = time.monotonic()
        for begin in range(0, len(todo), chunk_size):
            part = todo[begin:begin + chunk_size]
            outputs = []
            for offset in range(0, len(part), batch_size):
                items = part[offset:offset + batch_size]
                batch = np.stack([augmented(crops[index:index + 1], augmentation)[0]
                                  for _, (index, augmentation) in items])
                images = torch.from_numpy(batch.astype(np.float32) / 255.0)[:, None].to(device)
                outputs.append(self.trunk(images).half().cpu().numpy())
            self._write_chunk([key for key, _ in part], np.concatenate(outputs))
            log(f'{begin + len(part)}/{len(todo)} feature maps, {time.monotonic() - start:.0f} s')
        return len(todo)

    def _write_chunk(self, keys, features):
        number = len(self._chunks)
        path = self.cache_dir / f'chunk_{number:05d}.npy'
        for target, array in ((path, features), (path.with_name(f'chunk_{number:05d}.keys.npy'), np.array(keys))):
            partial = target.with_name(target.name + '.partial')
            with open(partial, 'wb') as handle:
                np.save(handle, array)
            partial.replace(target)
        self._chunks.append(np.load(path, mmap_mode='r'))
        for row, key in enumerate(keys):
            self._index[key] = (number, row)


class CachedFeatureDataset(Dataset):
    """Prepared faces as cached trunk features: 'image' float [C, h, w], landmarks, landmark_mask, label.

    ``features`` maps an augmentation name to float16 [N, C, h, w] (``hflip``
    needed only with flip augmentation); ``augment`` a FeatureAugment or None.
    """

    def __init__(self, faces, features, augment=None):
        self.faces, self.features, self.augment = faces, features, augment
        self.crop_size = faces.images.shape[-1]

    def __len__(self):
        return len(self.faces.labels)

    def __getitem__(self, index):
        landmarks = self.faces.landmarks[index]
        flipped = self.augment is not None and self.augment.flip()
        features = self.features['hflip' if flipped else 'none'][index].float()
        if flipped:
            landmarks = hflip_landmarks(landmarks, self.crop_size)
        if self.augment is not None:
            features, landmarks = self.augment.shift(features, landmarks)
        item = {
            'image': features,
            'landmarks': torch.from_numpy(np.ascontiguousarray(landmarks, dtype=np.float32)),
            'landmark_mask': torch.tensor(bool(self.faces.found[index])),
            'label': torch.tensor(int(self.faces.labels[index])),
        }
        if self.faces.teacher is not None:
            item['teacher'] = torch.from_numpy(self.faces.teacher[index])
        return item


def cached_features(cache, faces, augmentations, log=print):
    """{augmentation: float16 [N, C, h, w]} of prepared faces, extracting what the cache lacks."""
    cache.extract(faces.images, augmentations, log=log)
    return {augmentation: cache.lookup(faces.images, augmentation) for augmentation in augmentations}
