"""``fer-teacher-probs``: soft labels of your own models for distillation (``data.teacher_probs``).

Each model classifies every image of the chosen splits, on its aligned crop
and on the mirrored crop, through the runtime the node would use
(:func:`fer_ros.model.serving.load_classifier`: compiled on a CPU where the
model allows it). The file has the layout :mod:`fer_ros.training.distill`
reads: per split the images' content keys (sha1 of the file, as the
landmark cache keys it), labels and ``<split>_probs`` float16
[models, (plain, mirrored), N, C].

  fer-teacher-probs fer_ros/weights/cnn_se_gcn_fer2013 --data ../shared/data/fer2013 \\
    --landmark-cache ../cache/landmarks --out ../cache/teachers/cnn_se_gcn_fer2013.npz
"""
import argparse
from pathlib import Path

import numpy as np

from fer_ros.data.datasets import load_samples, prepare_faces
from fer_ros.data.landmarks import LandmarkCache, content_key
from fer_ros.model.serving import load_classifier
from fer_ros.training import console_script
from fer_ros.vision.mirror import hflip_landmarks


def view_probabilities(classifier, faces, batch_size=256) -> np.ndarray:
    """float32 [2, N, C]: the classifier's probabilities of the aligned crops and of their mirror images."""
    size = faces.images.shape[-1]
    views = []
    for mirrored in (False, True):
        crops = faces.images[:, :, ::-1] if mirrored else faces.images
        landmarks = hflip_landmarks(faces.landmarks, size) if mirrored else faces.landmarks
        views.append(np.concatenate([
            classifier.predict(np.ascontiguousarray(crops[start:start + batch_size]),
                               landmarks[start:start + batch_size])
            for start in range(0, len(crops), batch_size)]))
    return np.asarray(views, np.float32)


def teacher_file(model_paths, data, landmark_cache, kind='fer2013', splits=('train', 'val'),
                 device='auto', compiled=True, log=print) -> dict:
    """The arrays of a teacher file for ``model_paths`` over ``splits`` of a dataset (ValueError when the
    models' labels differ)."""
    classifiers = [load_classifier(path, device=device, compiled=compiled)[0] for path in model_paths]
    labels = {classifier.labels for classifier in classifiers}
    if len(labels) != 1:
        raise ValueError(f'the teacher models have different labels: {sorted(labels)}')
    class_names = labels.pop()
    cache = LandmarkCache(landmark_cache)
    arrays = {'class_names': np.array(class_names), 'model_names': np.array([c.name for c in classifiers])}
    for split in splits:
        samples = load_samples(kind, data, split, class_names)
        if tuple(samples.class_names) != tuple(class_names):
            raise ValueError(f'dataset classes {samples.class_names} differ from the models\' {class_names}')
        cache.extract(samples.images)
        faces = prepare_faces(samples, cache, classifiers[0].input_size)
        probabilities = np.asarray([view_probabilities(classifier, faces) for classifier in classifiers])
        arrays[f'{split}_keys'] = np.array([content_key(item) for item in samples.images])
        arrays[f'{split}_labels'] = faces.labels
        arrays[f'{split}_probs'] = probabilities.astype(np.float16)
        accuracy = (probabilities.mean(axis=(0, 1)).argmax(axis=1) == faces.labels).mean()
        log(f'{split}: {len(faces.labels)} images, teachers\' mean over both views right for {accuracy:.2%}')
    return arrays


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('models', nargs='+', help='model folders or checkpoint files (the teachers)')
    parser.add_argument('--data', required=True)
    parser.add_argument('--kind', default='fer2013', choices=['fer2013', 'fer2013_csv', 'ckplus', 'folder'])
    parser.add_argument('--splits', nargs='+', default=['train', 'val'])
    parser.add_argument('--landmark-cache', required=True)
    parser.add_argument('--out', type=Path, required=True, help='the teacher file (.npz)')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--pytorch', action='store_true', help='classify in PyTorch even where compiled is possible')
    args = parser.parse_args(argv)
    arrays = teacher_file(args.models, args.data, args.landmark_cache, args.kind, args.splits, args.device,
                          compiled=not args.pytorch)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f'wrote {args.out}')
    return arrays


cli = console_script(main)

if __name__ == '__main__':
    main()
