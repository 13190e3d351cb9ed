"""The pipeline's two halves: faces found on one thread and classified on another, one frame apart (as the
emotion node runs them), give what ``process`` gives frame by frame."""

import queue
import threading

import cv2
import numpy as np
import pytest

from fer_ros.model.compiled import CompiledClassifier
from fer_ros.model_store import SHIPPED_MODEL_DIR
from fer_ros.pipeline import EmotionPipeline, PipelineSettings

MESH_MODEL = 'cnn_se_gcn_facemesh_fer2013'
FRAMES = ('single_face.jpg', 'multi_face.jpg', 'multi_face.jpg', 'free-mountain-vector-01.jpg', 'single_face.jpg',
          'multi_face.jpg')


@pytest.fixture(scope='module')
def frames(samples_dir) -> list[np.ndarray]:
    images = [cv2.imread(str(samples_dir / name)) for name in FRAMES]
    assert all(image is not None for image in images)
    return images


def track_order(results) -> list[list[int]]:
    """Each frame's face ids as the order in which the ids first appeared (ids themselves are random)."""
    first_seen = {}
    return [[first_seen.setdefault(face.face_id, len(first_seen)) for face in faces] for faces in results]


def test_detect_and_classify_on_two_threads_match_process_frame_by_frame(frames):
    classifier = CompiledClassifier(SHIPPED_MODEL_DIR / f'{MESH_MODEL}.safetensors')
    settings = PipelineSettings(video_mode=False, smoothing=0.5, track_max_age_s=0.25)
    sequential, staged = EmotionPipeline(classifier, settings), EmotionPipeline(classifier, settings)
    handoff = queue.Queue(maxsize=1)  # stage one runs at most one frame ahead

    def detect_all():
        for index, image in enumerate(frames):
            handoff.put(staged.detect(image, stream='camera', now=0.1 * index))
        handoff.put(None)

    try:
        expected = [sequential.process(image, stream='camera', now=0.1 * index) for index, image in enumerate(frames)]
        detector = threading.Thread(target=detect_all)
        detector.start()
        got = []
        while (detected := handoff.get(timeout=60)) is not None:
            got.append(staged.classify(detected))
        detector.join()
    finally:
        sequential.close()
        staged.close()
    assert [len(faces) for faces in got] == [len(faces) for faces in expected]
    assert [len(faces) for faces in got][:4] == [1, 3, 3, 0]
    assert track_order(got) == track_order(expected)
    assert track_order(got)[4][0] != track_order(got)[0][0]  # the empty frame aged the first face's track out
    for got_faces, expected_faces in zip(got, expected):
        for got_face, expected_face in zip(got_faces, expected_faces):
            assert got_face.box == expected_face.box and got_face.label == expected_face.label
            np.testing.assert_allclose(got_face.probabilities, expected_face.probabilities, atol=1e-6)


def test_a_frame_without_faces_detects_nothing_and_classifies_to_no_result(frames):
    pipeline = EmotionPipeline(CompiledClassifier(SHIPPED_MODEL_DIR / f'{MESH_MODEL}.safetensors'),
                               PipelineSettings(video_mode=False))
    try:
        detected = pipeline.detect(frames[3], stream='camera', now=1.0)
        assert detected.boxes == [] and len(detected.crops) == 0 and detected.now == 1.0
        assert pipeline.classify(detected) == []
    finally:
        pipeline.close()
