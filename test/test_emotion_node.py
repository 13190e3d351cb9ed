"""The emotion node end to end: real rclpy node, real messages, real images, tiny real models."""

import json
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
import yaml
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from sensor_msgs.msg import CompressedImage, Image

from fer_ros.labels import FER2013_LABELS
from fer_ros.model.checkpoint import ModelLoadError
from fer_ros.model_store import ModelNameError
from fer_ros.nodes.emotion_node import EmotionNode
from fer_ros.srv import RunSelfCheck, SwitchModel
from model_fixtures import BAD_MODELS, write_model_zoo
from node_harness import running_emotion_node, stamp_key

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def models(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp('models')
    write_model_zoo(directory)
    return directory


@pytest.fixture(scope='module')
def ros(models, tmp_path_factory):
    """An emotion node serving tiny_a and a test node, spun together in one context."""
    with running_emotion_node([
        Parameter('model', value='tiny_a'),
        Parameter('model_dir', value=str(models)),
        Parameter('compressed_image_topics', value=['image_raw/compressed']),
        Parameter('video_mode', value=False),
        Parameter('diagnostics_period', value=0.5),
        Parameter('publish_annotated', value=True),
        Parameter('annotated_max_rate', value=0.0),
        Parameter('report_dir', value=str(tmp_path_factory.mktemp('reports'))),
    ]) as nodes:
        yield nodes


@pytest.fixture(scope='module')
def face_image(samples_dir) -> np.ndarray:
    image = cv2.imread(str(samples_dir / 'single_face.jpg'))
    assert image is not None
    return image


@pytest.fixture(scope='module')
def no_face_image(samples_dir) -> np.ndarray:
    image = cv2.imread(str(samples_dir / 'free-mountain-vector-01.jpg'))
    assert image is not None
    return image


def test_face_frame_gives_one_emotion_stamped_with_the_source_header(ros, face_image):
    node, camera = ros
    header = camera.send(face_image)
    result = camera.result(header)
    assert result.header.frame_id == 'test_camera_optical'
    assert len(result.emotions) == 1
    emotion = result.emotions[0]
    assert stamp_key(emotion.header) == stamp_key(header)
    assert emotion.header.frame_id == header.frame_id
    assert list(emotion.labels) == list(FER2013_LABELS)
    assert len(emotion.probabilities) == len(emotion.labels)
    assert abs(sum(emotion.probabilities) - 1.0) < 1e-4
    assert emotion.label == emotion.labels[int(np.argmax(emotion.probabilities))]
    assert emotion.confidence == pytest.approx(max(emotion.probabilities), abs=1e-6)
    assert -1.0 <= emotion.valence <= 1.0 and -1.0 <= emotion.arousal <= 1.0
    assert emotion.model == 'tiny_a'
    assert emotion.face_id
    height, width = face_image.shape[:2]
    roi = emotion.roi
    assert roi.width > 20 and roi.height > 20
    assert roi.x_offset + roi.width <= width and roi.y_offset + roi.height <= height
    # The same face also arrives alone on emotion/faces.
    camera.wait_for(lambda: stamp_key(header) in camera.faces)
    assert camera.faces[stamp_key(header)][0].face_id == emotion.face_id


def test_annotated_image_has_the_source_header_and_size(ros, face_image):
    node, camera = ros
    header = camera.send(face_image)
    camera.wait_for(lambda: stamp_key(header) in camera.annotated)
    annotated = camera.annotated[stamp_key(header)]
    assert (annotated.height, annotated.width) == face_image.shape[:2]
    assert annotated.encoding == 'bgr8' and annotated.header.frame_id == header.frame_id
    pixels = np.frombuffer(annotated.data, np.uint8).reshape(face_image.shape)
    assert (pixels != face_image).any()  # the box and label were drawn


def test_compressed_frame_is_processed_like_a_raw_one(ros, face_image):
    node, camera = ros
    header = camera.send(face_image, compressed=True)
    result = camera.result(header)
    assert len(result.emotions) == 1 and result.emotions[0].model == 'tiny_a'


def test_frame_without_a_face_gives_an_empty_array(ros, no_face_image):
    node, camera = ros
    header = camera.send(no_face_image)
    result = camera.result(header)
    assert result.emotions == []
    assert stamp_key(result.header) == stamp_key(header)


@pytest.mark.parametrize('bad_message', [
    Image(height=4, width=4, encoding='yuv999', step=8, data=bytes(32)),
    Image(height=480, width=640, encoding='bgr8', step=1920, data=bytes(100)),
    Image(height=0, width=0, encoding='bgr8', step=0, data=b''),
    Image(height=10000, width=10000, encoding='bgr8', step=30000, data=bytes(64)),
    CompressedImage(format='jpeg', data=b'\xff\xd8 not really a jpeg'),
], ids=['unknown encoding', 'truncated data', 'empty image', 'huge header tiny data', 'corrupt jpeg'])
def test_bad_frame_is_counted_and_the_node_keeps_serving(ros, face_image, bad_message):
    node, camera = ros
    bad_before = node.stats()['bad']
    bad_header = camera.send_raw(bad_message)
    camera.wait_for(lambda: node.stats()['bad'] == bad_before + 1)
    assert stamp_key(bad_header) not in camera.arrays
    header = camera.send(face_image)
    assert len(camera.result(header).emotions) == 1


def test_diagnostics_report_the_counters(ros, face_image):
    node, camera = ros
    camera.result(camera.send(face_image))
    count = len(camera.diagnostics)
    camera.wait_for(lambda: len(camera.diagnostics) > count)
    status = camera.diagnostics[-1].status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert int(values['frames processed']) >= 1
    assert values['model'] in ('tiny_a', 'tiny_b')
    assert status.hardware_id == 'fer_ros'


def test_switch_model_refusals_keep_the_old_model_serving(ros, face_image):
    node, camera = ros
    stop = threading.Event()

    def stream_frames():  # frames keep flowing while the service is called
        while not stop.is_set():
            camera.send(face_image)
            time.sleep(0.1)

    streamer = threading.Thread(target=stream_frames)
    processed_before, bad_before = node.stats()['processed'], node.stats()['bad']
    streamer.start()
    try:
        refusals = [('../tiny_a', 'invalid'), ('a/b', 'invalid'), ('/etc/passwd', 'invalid'),
                    ('missing', 'no model named'), ('corrupt', 'sha256'), ('incompatible', 'do not match'),
                    ('truncated', 'sha256'), ('bit_flipped', 'sha256'), ('no_labels', 'lacks'),
                    ('unknown_labels', 'expression labels'), ('numeric_name', 'name must be a string'),
                    ('nan_weights', 'NaN')]
        assert {name for name, _ in refusals} >= set(BAD_MODELS)
        for name, reason in refusals:
            response = camera.call(camera.switch_client, SwitchModel.Request(model=name))
            assert not response.success, name
            assert response.active_model == 'tiny_a'
            assert 'still serving' in response.message and reason in response.message
    finally:
        stop.set()
        streamer.join()
    camera.wait_for(lambda: node.stats()['processed'] > processed_before)
    assert node.stats()['bad'] == bad_before
    models_seen = {e.model for key, a in camera.arrays.items() for e in a.emotions}
    assert models_seen == {'tiny_a'}


def test_switch_model_lists_then_switches(ros, face_image):
    node, camera = ros
    listing = camera.call(camera.switch_client, SwitchModel.Request(model=''))
    assert listing.success and listing.active_model == 'tiny_a'
    assert {'tiny_a', 'tiny_b'} <= set(listing.available_models)

    response = camera.call(camera.switch_client, SwitchModel.Request(model='tiny_b'))
    assert response.success, response.message
    assert response.active_model == 'tiny_b'
    result = camera.result(camera.send(face_image))
    assert result.emotions[0].model == 'tiny_b'

    back = camera.call(camera.switch_client, SwitchModel.Request(model='tiny_a'))
    assert back.success and back.active_model == 'tiny_a'


def test_self_check_on_seen_faces(ros, face_image):
    node, camera = ros
    for _ in range(3):
        camera.result(camera.send(face_image))
    request = RunSelfCheck.Request(attacks=['fgsm', 'pgd'], epsilons=[1.0, 8.0], samples=4, source='seen')
    response = camera.call(camera.self_check_client, request)
    assert response.success, response.message
    assert [(r.attack, r.epsilon) for r in response.results] == [('fgsm', 1.0), ('fgsm', 8.0), ('pgd', 1.0), ('pgd', 8.0)]
    for row in response.results:
        # On seen faces the reference is the model's own clean prediction.
        assert row.clean_accuracy == pytest.approx(1.0)
        assert row.flip_rate == pytest.approx(1.0 - row.attacked_accuracy)
    for attack in ('fgsm', 'pgd'):
        flip_rates = [r.flip_rate for r in response.results if r.attack == attack]
        assert flip_rates == sorted(flip_rates), f'{attack} flip rate falls as epsilon grows: {flip_rates}'
    report = json.loads(response.report_json)
    assert report['model'] == 'tiny_a' and report['source'] == 'seen'
    assert len(report['rows']) == 4 and 1 <= report['samples'] <= 4
    assert json.loads(Path(response.report_path).read_text()) == report
    assert response.summary


def test_self_check_on_a_labelled_folder(ros, samples_dir, tmp_path):
    node, camera = ros
    for label, file in [('happy', '0-f15-hao-ph.jpg'), ('surprised', '0-f1-su-ph.jpg')]:
        (tmp_path / label).mkdir()
        (tmp_path / label / file).write_bytes((samples_dir / file).read_bytes())
    request = RunSelfCheck.Request(attacks=['fgsm'], epsilons=[4.0], samples=8, source=str(tmp_path))
    response = camera.call(camera.self_check_client, request)
    assert response.success, response.message
    (row,) = response.results
    assert row.attack == 'fgsm' and row.epsilon == 4.0
    assert row.clean_accuracy in (0.0, 0.5, 1.0)  # two labelled faces
    assert 0.0 <= row.attacked_accuracy <= 1.0
    assert json.loads(response.report_json)['samples'] == 2


@pytest.mark.parametrize('request_fields, expected', [
    (dict(attacks=['bogus']), 'unknown attack'),
    (dict(epsilons=[-1.0]), 'epsilons'),
    (dict(source='/nonexistent/folder'), 'does not exist'),
])
def test_self_check_refuses_bad_requests(ros, request_fields, expected):
    node, camera = ros
    response = camera.call(camera.self_check_client, RunSelfCheck.Request(**request_fields))
    assert not response.success
    assert expected in response.message
    assert response.results == []


@pytest.mark.parametrize('overrides, error', [
    ([Parameter('max_faces', value=0)], ValueError),
    ([Parameter('device', value='tpu')], ValueError),
    ([Parameter('torch_threads', value=-1)], ValueError),
    ([Parameter('landmark_backend', value='dlib')], ValueError),
    ([Parameter('image_topics', value=['']), Parameter('compressed_image_topics', value=[''])], ValueError),
    ([Parameter('model', value='missing')], ModelNameError),
    ([Parameter('model', value='../escape')], ModelNameError),
    ([Parameter('model', value='corrupt')], ModelLoadError),
])
def test_bad_parameters_stop_the_node_at_startup_with_a_clear_error(models, overrides, error):
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        base = [Parameter('model', value='tiny_a'), Parameter('model_dir', value=str(models))]
        with pytest.raises(error):
            EmotionNode(context=context, parameter_overrides=base + overrides)
    finally:
        rclpy.shutdown(context=context)


def set_remote(camera, **values):
    """Set emotion_node parameters through its parameter service, like `ros2 param set`; the results."""
    client = AsyncParameterClient(camera, 'emotion_node')
    assert client.wait_for_services(timeout_sec=30)
    future = client.set_parameters([Parameter(name, value=value) for name, value in values.items()])
    deadline = time.monotonic() + 60
    while not future.done():
        assert time.monotonic() < deadline, 'set_parameters did not answer'
        time.sleep(0.02)
    return future.result().results


def test_max_faces_set_at_run_time_takes_effect(ros, samples_dir):
    node, camera = ros
    crowd = cv2.imread(str(samples_dir / 'multi_face.jpg'))
    assert len(camera.result(camera.send(crowd)).emotions) >= 3
    try:
        (result,) = set_remote(camera, max_faces=1)
        assert result.successful, result.reason
        assert node.get_parameter('max_faces').value == 1
        assert len(camera.result(camera.send(crowd)).emotions) == 1
    finally:
        set_remote(camera, max_faces=4)
    assert len(camera.result(camera.send(crowd)).emotions) >= 3


@pytest.mark.parametrize('name, value, reason', [
    ('smoothing', 0.0, 'smoothing'),
    ('max_faces', 100, ''),                         # outside the descriptor's range
    ('annotated_max_rate', -1.0, ''),
    ('image_topics', ['other'], 'read-only'),
    ('device', 'cuda', 'read-only'),
    ('model', 'missing', 'no model named'),
    ('model', 'nan_weights', 'NaN'),
])
def test_bad_run_time_parameter_is_refused_and_nothing_changes(ros, face_image, name, value, reason):
    node, camera = ros
    before = node.get_parameter(name).value
    (result,) = set_remote(camera, **{name: value})
    assert not result.successful and reason in result.reason
    assert node.get_parameter(name).value == before
    assert camera.result(camera.send(face_image)).emotions[0].model == 'tiny_a'


def test_model_parameter_switches_the_model_and_switch_model_updates_the_parameter(ros, face_image):
    node, camera = ros
    try:
        (result,) = set_remote(camera, model='tiny_b')
        assert result.successful, result.reason
        assert camera.result(camera.send(face_image)).emotions[0].model == 'tiny_b'
        response = camera.call(camera.switch_client, SwitchModel.Request(model='tiny_a'))
        assert response.success and node.get_parameter('model').value == 'tiny_a'
    finally:
        camera.call(camera.switch_client, SwitchModel.Request(model='tiny_a'))
    assert camera.result(camera.send(face_image)).emotions[0].model == 'tiny_a'


def test_emotion_node_in_a_namespace_reads_the_params_file(models, tmp_path):
    params = yaml.safe_load((REPO / 'config' / 'emotion.yaml').read_text())
    params['/**/emotion_node']['ros__parameters'].update(max_faces=7, model='tiny_a', model_dir=str(models))
    params_file = tmp_path / 'params.yaml'
    params_file.write_text(yaml.safe_dump(params))
    context = rclpy.Context()
    rclpy.init(context=context, args=['--ros-args', '--params-file', str(params_file)])
    try:
        node = EmotionNode(context=context, namespace='robot1')
        assert node.get_fully_qualified_name() == '/robot1/emotion_node'
        assert node.get_parameter('max_faces').value == 7
        assert node.input_topics == ['/robot1/image_raw']
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
