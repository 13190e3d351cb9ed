"""Generate ``fer_ros/model/facemesh_constants.py`` from MediaPipe and real crops.

The model code must load without mediapipe (the ROS node may run a model with
landmarks from another process), and the graph must not drift with the
installed mediapipe version, so the face-mesh topology is frozen here once:

* ``FACEMESH_EDGES``: undirected edges of ``FACEMESH_TESSELATION``.
* ``MEAN_TEMPLATE``: mean crop-normalised landmarks of FER-2013 crops with a
  detected face, made left/right symmetric (the no-face fallback).
* ``MIRROR_PERMUTATION``: index of each landmark's mirror image, found by
  optimal assignment of the template onto its horizontal reflection (checked:
  an involution, 33<->263 eye corners, 61<->291 mouth corners, 1 nose tip and
  152 chin fixed, all but 6 of the 1322 mesh edges map onto mesh edges).

Usage: ``python -m fer_ros.data.make_facemesh_constants [FER_TRAIN_DIR]``.
"""
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from fer_ros.data.landmarks import FaceMeshDetector, read_gray

OUTPUT = Path(__file__).resolve().parent.parent / 'model' / 'facemesh_constants.py'


def tessellation_edges():
    """Sorted undirected (i, j), i < j, edges of the face-mesh tessellation."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION
    return sorted({(min(a, b), max(a, b)) for a, b in FACEMESH_TESSELATION})


def mean_landmarks(image_dir, every=20):
    """Mean crop-normalised landmarks over every n-th image of a folder tree."""
    detector = FaceMeshDetector()
    found = []
    for path in sorted(Path(image_dir).rglob('*.jpg'))[::every]:
        landmarks = detector.detect(read_gray(path))
        if landmarks is not None:
            found.append(landmarks)
    print(f'{len(found)} faces for the template')
    return np.mean(found, axis=0)


def mirror_permutation(template):
    """Landmark index permutation of a horizontal flip of the template."""
    centred = template - template.mean(axis=0)
    mirrored = centred * np.array([-1.0, 1.0, 1.0])
    cost = np.linalg.norm(centred[:, None, :] - mirrored[None, :, :], axis=-1)
    _, permutation = linear_sum_assignment(cost)
    return permutation


def check(edges, permutation):
    """The permutation must be an involution that maps the mesh onto itself.

    The tessellation is not exactly symmetric (a few quads are split along the
    other diagonal), so up to 1 % of mirrored edges may be missing.
    """
    assert np.array_equal(permutation[permutation], np.arange(len(permutation)))
    edge_set = set(edges)
    mapped = {(min(permutation[a], permutation[b]), max(permutation[a], permutation[b])) for a, b in edges}
    assert len(mapped - edge_set) <= len(edges) // 100, f'{len(mapped - edge_set)} mirrored edges not in the mesh'
    for left, right in ((33, 263), (61, 291), (1, 1), (152, 152)):
        assert permutation[left] == right, (left, permutation[left], right)


def format_rows(items, per_line):
    rows = [', '.join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    return ''.join(f'    {row},\n' for row in rows)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    image_dir = argv[0] if argv else '/work/shared/data/fer2013/train'
    edges = tessellation_edges()
    template = mean_landmarks(image_dir)
    permutation = mirror_permutation(template)
    check(edges, permutation)
    mirrored = template[permutation] * np.array([-1.0, 1.0, 1.0]) + np.array([1.0, 0.0, 0.0])
    symmetric = (template + mirrored) / 2
    text = (
        '"""Frozen MediaPipe face-mesh constants (generated, do not edit).\n\n'
        'Made by ``python -m fer_ros.data.make_facemesh_constants``; see that module.\n'
        'Landmarks are crop-normalised: x, y in [0, 1] of the crop, z in crop widths.\n"""\n\n'
        f'NUM_LANDMARKS = {len(template)}\n\n'
        'FACEMESH_EDGES = (\n' + format_rows([f'({a}, {b})' for a, b in edges], 8) + ')\n\n'
        'MIRROR_PERMUTATION = (\n' + format_rows([str(int(i)) for i in permutation], 16) + ')\n\n'
        'MEAN_TEMPLATE = (\n'
        + format_rows([f'({x:.4f}, {y:.4f}, {z:.4f})' for x, y, z in symmetric], 3) + ')\n'
    )
    OUTPUT.write_text(text)
    print(f'wrote {OUTPUT}: {len(edges)} edges')


if __name__ == '__main__':
    main()
