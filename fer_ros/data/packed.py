"""Aligned-face datasets packed into one portable file (``fer-pack-faces``).

A packed file holds, for every image of the chosen splits, its encoded bytes
as stored on disk, its label and the alignment :func:`prepare_faces` gives it
(the :func:`alignment_matrix` from its cached landmarks, or none for an image
without a detected face), the whole lzma-compressed (FER-2013's train and
val: 46 MB). Unpacking decodes and warps every image as ``prepare_faces``
does, so a machine without the dataset folder, the landmark cache or
MediaPipe (a GPU machine lent for a training run) trains on the crops the
node sees. Landmarks are not packed: models that read them need the cache.
"""
import argparse
import io
import lzma
from pathlib import Path

import cv2
import numpy as np

from fer_ros.data.datasets import PreparedFaces, load_samples
from fer_ros.data.landmarks import LandmarkCache, load_image, mean_template
from fer_ros.vision.alignment import alignment_matrix, warp_face

FORMAT = 'fer_ros packed faces 1'


class PackedFacesError(ValueError):
    """Not a packed-faces file, or one without the requested split."""


def encoded_bytes(item) -> bytes:
    """The file's bytes for a path; a lossless PNG for an in-memory image (fer2013.csv rows)."""
    if isinstance(item, np.ndarray):
        ok, data = cv2.imencode('.png', item)
        if not ok:
            raise ValueError('cannot encode an in-memory image as PNG')
        return data.tobytes()
    return Path(item).read_bytes()


def pack_faces(splits, landmark_cache, path, input_size=48, log=print):
    """Write ``splits`` ({name: ImageSamples}, one label set) with their alignments to ``path``."""
    class_names = {samples.class_names for samples in splits.values()}
    if len(class_names) != 1:
        raise ValueError(f'the splits have different label sets: {sorted(class_names)}')
    chunks, offsets, labels, split_of, matrices = [], [0], [], [], []
    for split_index, (name, samples) in enumerate(splits.items()):
        for item, label in zip(samples.images, samples.labels):
            data = encoded_bytes(item)
            chunks.append(data)
            offsets.append(offsets[-1] + len(data))
            labels.append(label)
            split_of.append(split_index)
            points, found = landmark_cache.lookup(item)
            matrix = np.full((2, 3), np.nan)
            if found:
                height, width = load_image(item).shape[:2]
                matrix, _ = alignment_matrix(points * np.array([width, height, width], np.float32), input_size)
            matrices.append(matrix)
        log(f'packed {name}: {len(samples)} images')
    buffer = io.BytesIO()
    np.savez(buffer, format=np.array(FORMAT), class_names=np.array(next(iter(class_names))),
             split_names=np.array(list(splits)), input_size=np.array(input_size),
             encoded=np.frombuffer(b''.join(chunks), np.uint8), offsets=np.array(offsets, np.int64),
             labels=np.array(labels, np.int64), split_of=np.array(split_of, np.int16),
             matrices=np.array(matrices, np.float64))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + '.partial')
    partial.write_bytes(lzma.compress(buffer.getvalue(), preset=9 | lzma.PRESET_EXTREME))
    partial.replace(path)
    return path


def read_packed(path):
    """The arrays of a packed file (dict), checked for its format."""
    try:
        with np.load(io.BytesIO(lzma.decompress(Path(path).read_bytes()))) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (lzma.LZMAError, OSError, ValueError, KeyError) as error:
        raise PackedFacesError(f'{path} is not a packed-faces file: {error}') from error
    if str(arrays.get('format')) != FORMAT:
        raise PackedFacesError(f'{path} is not a packed-faces file ({FORMAT!r})')
    return arrays


def unpack_faces(path, split):
    """PreparedFaces of one split: the aligned crops prepare_faces makes; landmarks are the mean
    template with ``found`` False (not packed)."""
    arrays = read_packed(path)
    names = [str(name) for name in arrays['split_names']]
    if split not in names:
        raise PackedFacesError(f'{path} has no split {split!r}; it has {names}')
    size = int(arrays['input_size'])
    indices = np.flatnonzero(arrays['split_of'] == names.index(split))
    encoded, offsets = arrays['encoded'], arrays['offsets']
    images = np.empty((len(indices), size, size), np.uint8)
    for row, index in enumerate(indices):
        gray = cv2.imdecode(encoded[offsets[index]:offsets[index + 1]], cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise PackedFacesError(f'{path}: image {index} cannot be decoded')
        matrix = arrays['matrices'][index]
        images[row] = (warp_face(gray, matrix, size) if np.isfinite(matrix).all()
                       else cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA))
    landmarks = np.repeat(mean_template()[None], len(indices), axis=0)
    return PreparedFaces(images, landmarks, np.zeros(len(indices), bool), arrays['labels'][indices].copy(),
                         tuple(str(name) for name in arrays['class_names']))


def main(argv=None):
    parser = argparse.ArgumentParser(prog='fer-pack-faces', description=__doc__.split('\n\n')[0])
    parser.add_argument('--kind', default='fer2013', help='dataset kind (see fer-train data.kind)')
    parser.add_argument('--path', default='../shared/data/fer2013')
    parser.add_argument('--splits', nargs='+', default=['train', 'val'])
    parser.add_argument('--landmark-cache', default='../cache/landmarks')
    parser.add_argument('--input-size', type=int, default=48)
    parser.add_argument('--out', type=Path, required=True, help='e.g. ../cache/fer2013_faces.npz.xz')
    args = parser.parse_args(argv)
    splits = {split: load_samples(args.kind, args.path, split) for split in args.splits}
    cache = LandmarkCache(args.landmark_cache)
    cache.extract([item for samples in splits.values() for item in samples.images])
    path = pack_faces(splits, cache, args.out, args.input_size)
    print(f'{path}: {path.stat().st_size / 1e6:.1f} MB')
    return 0


if __name__ == '__main__':
    main()
