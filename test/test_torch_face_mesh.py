"""The PyTorch port of MediaPipe's face detector and mesh against MediaPipe itself, on real faces."""

import cv2
import numpy as np
import pytest
import torch

from fer_ros.data.landmarks import LandmarkCache, read_gray
from fer_ros.model.inference import ExpressionClassifier
from fer_ros.pipeline import EmotionPipeline, PipelineSettings
from fer_ros.vision.face_mesh import FaceMeshDetector
from fer_ros.vision.tflite_graph import TFLiteError, load_tflite
from fer_ros.vision.torch_face_mesh import TorchFaceMesh, ssd_anchors, weighted_nms
from model_fixtures import write_tiny_model

PHOTOS = ['0-f15-hao-ph.jpg', '0-f1-su-ph.jpg', '15-f13-anc-ph.jpg', '45-m7-di-ph.jpg', 'single_face.jpg',
          'multi_face.jpg', 'free-mountain-vector-01.jpg', 'BWPictureHuman.jpg']
MAX_ERROR = 0.015  # mean landmark error as a share of the face box's long side


@pytest.fixture(scope='module')
def detectors():
    mediapipe, torch_mesh = FaceMeshDetector(max_faces=4, video_mode=False), TorchFaceMesh(max_faces=4)
    yield mediapipe, torch_mesh
    mediapipe.close()


def mean_error(reference, other) -> float:
    side = max(reference.box[2], reference.box[3])
    return float(np.linalg.norm(reference.landmarks[:, :2] - other.landmarks[:, :2], axis=1).mean() / side)


@pytest.mark.parametrize('photo', PHOTOS)
def test_same_faces_and_landmarks_as_mediapipe(detectors, samples_dir, photo):
    mediapipe, torch_mesh = detectors
    image = cv2.imread(str(samples_dir / photo))
    expected, found = mediapipe.detect(image), torch_mesh.detect(image)
    assert len(found) == len(expected)
    for face in expected:  # match by landmark centroid
        centroid = face.landmarks[:, :2].mean(axis=0)
        twin = min(found, key=lambda f: np.linalg.norm(f.landmarks[:, :2].mean(axis=0) - centroid))
        assert mean_error(face, twin) < MAX_ERROR


def test_a_batch_of_frames_gives_what_each_frame_gives_alone(detectors, samples_dir):
    _, torch_mesh = detectors
    images = [cv2.imread(str(samples_dir / photo)) for photo in ('multi_face.jpg', 'free-mountain-vector-01.jpg',
                                                                  'single_face.jpg')]
    batched = torch_mesh.detect_batch(images)
    assert [len(faces) for faces in batched] == [3, 0, 1]
    for image, faces in zip(images, batched):
        for alone, together in zip(torch_mesh.detect(image), faces):
            assert np.allclose(alone.landmarks, together.landmarks, atol=0.05)
            assert alone.box == together.box


def test_pipeline_with_the_torch_backend_agrees_with_mediapipe(samples_dir, tmp_path):
    classifier = ExpressionClassifier(write_tiny_model(tmp_path, 'tiny'), device='cpu')
    image = cv2.imread(str(samples_dir / 'single_face.jpg'))
    results = []
    for backend in ('mediapipe', 'torch'):
        pipeline = EmotionPipeline(classifier, PipelineSettings(video_mode=False, landmark_backend=backend))
        results.append(pipeline.process(image))
        pipeline.close()
    (mediapipe_face,), (torch_face,) = results
    assert np.abs(np.array(mediapipe_face.box) - np.array(torch_face.box)).max() <= 2
    assert np.allclose(mediapipe_face.probabilities, torch_face.probabilities, atol=0.02)


def test_landmark_cache_backends_agree_on_dataset_crops(shared_data, tmp_path):
    images = sorted((shared_data / 'ckplus48').glob('*/*.png'))[::49][:20]
    caches = {backend: LandmarkCache(tmp_path / backend, backend=backend) for backend in ('mediapipe', 'torch')}
    for cache in caches.values():
        cache.extract(images, log=lambda line: None)
    for image in images:
        (reference, found_reference), (other, found_other) = (c.lookup(image) for c in caches.values())
        assert found_reference == found_other
        if found_reference:
            side = (reference[:, :2].max(0) - reference[:, :2].min(0)).max()
            assert np.linalg.norm(reference[:, :2] - other[:, :2], axis=1).mean() / side < MAX_ERROR
    assert read_gray(images[0]).shape == (48, 48)
    with pytest.raises(ValueError, match='made with the torch backend'):
        LandmarkCache(tmp_path / 'torch', backend='mediapipe')


def test_anchor_layout_and_weighted_nms():
    anchors = ssd_anchors()
    assert anchors.shape == (896, 2)
    assert torch.allclose(anchors[0], torch.tensor([1 / 32, 1 / 32])) and torch.equal(anchors[0], anchors[1])
    assert torch.allclose(anchors[512], torch.tensor([1 / 16, 1 / 16]))
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.1, 0.0, 1.1, 1.0], [5.0, 5.0, 6.0, 6.0]])
    keypoints = torch.zeros(3, 6, 2)
    kept, _, scores = weighted_nms(boxes, keypoints, torch.tensor([0.9, 0.6, 0.8]))
    assert len(kept) == 2 and torch.allclose(scores, torch.tensor([0.9, 0.8]))
    assert torch.allclose(kept[0], torch.tensor([0.04, 0.0, 1.04, 1.0]))  # score-weighted mean of the pair


def test_unreadable_tflite_file_is_refused(tmp_path):
    broken = tmp_path / 'broken.tflite'
    broken.write_bytes(b'not a flatbuffer at all')
    with pytest.raises(TFLiteError):
        load_tflite(broken)
