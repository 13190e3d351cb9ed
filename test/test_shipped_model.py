"""The FER-2013 model shipped in fer_ros/weights: size, metadata, and real labelled faces."""

import cv2
import pytest
from rclpy.parameter import Parameter

from fer_ros.labels import FER2013_LABELS
from fer_ros.model.checkpoint import checkpoint_paths, read_metadata
from fer_ros.model.inference import ExpressionClassifier
from fer_ros.model_store import SHIPPED_MODEL_DIR, ModelStore
from fer_ros.msg import EmotionStamped
from fer_ros.nodes.emotion_node import DEFAULT_MODEL
from fer_ros.pipeline import EmotionPipeline, PipelineSettings
from node_harness import running_emotion_node

MAX_WEIGHTS_BYTES = 25 * 1024 * 1024


@pytest.fixture(scope='module')
def shipped_path():
    return ModelStore([SHIPPED_MODEL_DIR]).resolve(DEFAULT_MODEL)


def test_shipped_weights_are_small_and_described(shipped_path):
    weights, metadata_path = checkpoint_paths(shipped_path)
    assert weights.stat().st_size <= MAX_WEIGHTS_BYTES
    metadata = read_metadata(shipped_path)
    assert metadata['name'] == DEFAULT_MODEL
    assert tuple(metadata['labels']) == FER2013_LABELS
    assert all(getattr(EmotionStamped, label.upper()) == label for label in metadata['labels'])
    assert metadata['metrics']['val_accuracy'] > 0.5
    assert (SHIPPED_MODEL_DIR / f'{DEFAULT_MODEL}.md').is_file(), 'model card missing'


@pytest.mark.parametrize('photo, expected', [
    ('0-f15-hao-ph.jpg', 'happy'),
    ('0-f1-su-ph.jpg', 'surprised'),
    ('single_face.jpg', 'happy'),
])
def test_shipped_model_recognises_labelled_sample_faces(shipped_path, samples_dir, photo, expected):
    pipeline = EmotionPipeline(ExpressionClassifier(shipped_path, device='cpu'), PipelineSettings(video_mode=False))
    try:
        faces = pipeline.process(cv2.imread(str(samples_dir / photo)))
    finally:
        pipeline.close()
    assert len(faces) == 1
    assert faces[0].label == expected, dict(zip(faces[0].labels, faces[0].probabilities.round(3)))


def test_node_serves_the_shipped_model_by_default(shipped_path, samples_dir):
    with running_emotion_node([Parameter('video_mode', value=False)]) as (node, camera):
        result = camera.result(camera.send(cv2.imread(str(samples_dir / 'single_face.jpg'))))
    (emotion,) = result.emotions
    assert emotion.model == DEFAULT_MODEL
    assert emotion.label == 'happy'
    assert emotion.valence > 0
