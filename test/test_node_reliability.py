"""The emotion node under hostile input: a seeded stream of malformed frames between valid face frames,
diagnostics that recover, and service requests that used to kill it."""

import time

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image

from fer_ros.fuzz import REFUSE, fuzz_frames
from fer_ros.srv import RunSelfCheck, SwitchModel
from model_fixtures import write_tiny_model
from node_harness import running_emotion_node, stamp_key

FUZZED_MESSAGES = 200
VALID_EVERY = 4  # a valid face frame after every few malformed ones


def fuzz_message(frame):
    if frame.kind == 'raw':
        return Image(encoding=frame.encoding, width=frame.width, height=frame.height, step=frame.step,
                     is_bigendian=frame.is_bigendian, data=frame.data)
    return CompressedImage(format=frame.image_format, data=frame.data)


@pytest.fixture(scope='module')
def ros(tmp_path_factory):
    models = tmp_path_factory.mktemp('models')
    write_tiny_model(models, 'tiny')
    with running_emotion_node([
        Parameter('model', value='tiny'),
        Parameter('model_dir', value=str(models)),
        Parameter('compressed_image_topics', value=['image_raw/compressed']),
        Parameter('video_mode', value=False),
        Parameter('diagnostics_period', value=0.25),
        Parameter('diagnostics_window', value=1.0),
        Parameter('report_dir', value=str(tmp_path_factory.mktemp('reports'))),
    ]) as nodes:
        yield nodes


@pytest.fixture(scope='module')
def face_image(samples_dir) -> np.ndarray:
    return cv2.imread(str(samples_dir / 'single_face.jpg'))


def test_fuzzed_frames_are_refused_and_every_valid_frame_between_them_is_answered(ros, face_image):
    node, camera = ros
    before = node.stats()
    refused_stamps, valid_headers = [], []
    for index, frame in enumerate(fuzz_frames(FUZZED_MESSAGES, seed=11, image=face_image[::4, ::4])):
        header = camera.send_raw(fuzz_message(frame))
        if frame.expected == REFUSE:
            refused_stamps.append(stamp_key(header))
        if index % VALID_EVERY == VALID_EVERY - 1:
            time.sleep(0.01)  # let the node take the last malformed frame before the valid one replaces it
            valid_headers.append(camera.send(face_image))
            camera.result(valid_headers[-1])
    for header in valid_headers:
        assert len(camera.arrays[stamp_key(header)].emotions) == 1
    camera.result(camera.send(face_image))  # after the last malformed frame
    time.sleep(0.5)
    after = node.stats()
    counted = {key: after[key] - before[key] for key in after}
    # Every frame the node received is accounted for: answered, skipped for a newer one, or counted bad.
    # (DDS itself may drop a frame a depth-1 subscription had no time to take: those never arrive.)
    assert counted['received'] == counted['processed'] + counted['skipped'] + counted['bad']
    assert counted['bad'] >= len(refused_stamps) / 2
    assert not any(stamp in camera.arrays for stamp in refused_stamps)


def test_diagnostics_warn_after_a_bad_frame_and_recover(ros, face_image):
    node, camera = ros
    camera.send_raw(Image(encoding='yuv999', width=4, height=4, step=8, data=bytes(32)))
    count = len(camera.diagnostics)
    camera.wait_for(lambda: any(d.status[0].level == DiagnosticStatus.WARN for d in camera.diagnostics[count:]))
    warned = len(camera.diagnostics)
    camera.result(camera.send(face_image))
    camera.wait_for(lambda: any(d.status[0].level == DiagnosticStatus.OK for d in camera.diagnostics[warned:]), timeout=10)
    status = camera.diagnostics[-1].status[0]
    assert status.message == 'running' and status.name.startswith('emotion_node')


def test_self_check_with_an_over_long_source_is_refused_and_the_node_keeps_serving(ros, face_image):
    node, camera = ros
    response = camera.call(camera.self_check_client, RunSelfCheck.Request(source='x' * 5000, samples=2))
    assert not response.success and 'cannot read dataset folder' in response.message
    assert len(camera.result(camera.send(face_image)).emotions) == 1


def test_results_name_the_model_as_loaded(ros, face_image, tmp_path):
    node, camera = ros
    response = camera.call(camera.switch_client, SwitchModel.Request(model='tiny'))
    assert response.success and response.active_model == 'tiny'
    assert camera.result(camera.send(face_image)).emotions[0].model == 'tiny'
