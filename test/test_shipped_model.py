"""The FER-2013 models shipped in fer_ros/weights: size, metadata, model cards, real labelled faces, switching."""

import cv2
import numpy as np
import pytest
from rclpy.parameter import Parameter

from fer_ros.labels import FER2013_LABELS
from fer_ros.model.checkpoint import checkpoint_paths, read_metadata
from fer_ros.model.inference import ExpressionClassifier
from fer_ros.model_store import SHIPPED_MODEL_DIR, ModelStore
from fer_ros.msg import EmotionStamped
from fer_ros.nodes.emotion_node import DEFAULT_MODEL
from fer_ros.pipeline import EmotionPipeline, PipelineSettings
from fer_ros.srv import SwitchModel
from model_fixtures import aligned_photo_faces
from node_harness import running_emotion_node

MAX_WEIGHTS_BYTES = 25_000_000  # the fused default's two branches too (its pixel weights int8)
SHIPPED_MODELS = {DEFAULT_MODEL: 'cnn_se_gcn_fused', 'cnn_se_gcn_facemesh_fer2013': 'cnn_se_gcn_facemesh',
                  'cnn_se_fer2013': 'cnn_se_gcn', 'pcnn_fer2013': 'pcnn', 'efficientnet_b2_fer2013': 'efficientnet_b2'}


@pytest.fixture(scope='module')
def shipped_path():
    return ModelStore([SHIPPED_MODEL_DIR]).resolve(DEFAULT_MODEL)


@pytest.mark.parametrize('name', list(SHIPPED_MODELS))
def test_shipped_weights_are_small_and_described(name):
    path = ModelStore([SHIPPED_MODEL_DIR]).resolve(name)
    weights, metadata_path = checkpoint_paths(path)
    metadata = read_metadata(path)
    assert weights.stat().st_size <= MAX_WEIGHTS_BYTES
    assert metadata['name'] == name and metadata['architecture'] == SHIPPED_MODELS[name]
    assert tuple(metadata['labels']) == FER2013_LABELS
    assert all(getattr(EmotionStamped, label.upper()) == label for label in metadata['labels'])
    assert metadata['metrics']['val_accuracy'] > 0.5
    if name == DEFAULT_MODEL:  # the fused default replaced the face-mesh model (64.81%): the 70% goal
        assert metadata['metrics']['val_accuracy'] >= 0.70 and metadata['metrics']['val_macro_f1'] >= 0.66
    assert (SHIPPED_MODEL_DIR / f'{name}.md').is_file(), 'model card missing'


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


def test_node_switches_to_the_shipped_baseline_and_back(samples_dir):
    image = cv2.imread(str(samples_dir / 'single_face.jpg'))
    with running_emotion_node([Parameter('video_mode', value=False)]) as (node, camera):
        listing = camera.call(camera.switch_client, SwitchModel.Request(model=''))
        assert set(SHIPPED_MODELS) <= set(listing.available_models)
        for name in [*SHIPPED_MODELS][1:] + [DEFAULT_MODEL]:
            response = camera.call(camera.switch_client, SwitchModel.Request(model=name))
            assert response.success and response.active_model == name, response.message
            (emotion,) = camera.result(camera.send(image)).emotions
            assert emotion.model == name and tuple(emotion.labels) == FER2013_LABELS
            assert sum(emotion.probabilities) == pytest.approx(1.0, abs=1e-3)
            assert emotion.label == emotion.labels[max(range(7), key=lambda i: emotion.probabilities[i])]


@pytest.mark.parametrize('name', list(SHIPPED_MODELS))
def test_torchscript_path_gives_the_eager_outputs_on_real_faces(name, samples_dir):
    """The node's default inference path (torchscript) against eager PyTorch, the reference: within 1e-4."""
    crops, landmarks = aligned_photo_faces(samples_dir)
    eager = ExpressionClassifier(SHIPPED_MODEL_DIR / f'{name}.safetensors', device='cpu')
    traced = ExpressionClassifier(SHIPPED_MODEL_DIR / f'{name}.safetensors', device='cpu', torchscript=True)
    assert traced.torchscript and not traced.trace_error
    for batch in (slice(0, 1), slice(0, 4)):  # batch 1 (one face) and batch 4 through the same trace
        np.testing.assert_allclose(traced.predict(crops[batch], landmarks[batch]),
                                   eager.predict(crops[batch], landmarks[batch]), atol=1e-4)
