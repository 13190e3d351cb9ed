"""The emotion node under hostile input: a seeded stream of malformed frames between valid face frames,
diagnostics that recover, and service requests that used to kill it."""

import threading
import time
from collections import deque
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from fer_ros.fuzz import REFUSE, fuzz_frames
from fer_ros.nodes.emotion_node import PARAMETERS, EmotionNode, FrameSlots, count_since, pipeline_health
from fer_ros.nodes.entry import run_node
from fer_ros.nodes.ros_image import bgr_to_image_message
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


def test_diagnostics_warn_while_processing_falls_behind_the_input_and_recover(ros, face_image):
    node, camera = ros
    camera.result(camera.send(face_image))
    skipped_before = node.stats()['skipped']
    count = len(camera.diagnostics)
    deadline = time.monotonic() + 10
    while not any(d.status[0].level == DiagnosticStatus.WARN and 'falls behind' in d.status[0].message
                  for d in camera.diagnostics[count:]):
        assert time.monotonic() < deadline, 'no warning while frames came faster than the node answers'
        for _ in range(20):  # a burst: each frame replaces the one before it while the node is busy
            camera.send(face_image)
        time.sleep(0.05)
    assert node.stats()['skipped'] > skipped_before

    def recovered(status):  # the burst has left the window
        values = {value.key: value.value for value in status.values}
        return status.level == DiagnosticStatus.OK and values['frames skipped in the last 1 s'] == '0'

    warned = len(camera.diagnostics)
    deadline = time.monotonic() + 10
    while not any(recovered(d.status[0]) for d in camera.diagnostics[warned:]):
        assert time.monotonic() < deadline, 'diagnostics never went back to OK'
        camera.result(camera.send(face_image))  # one frame at a time: none skipped
    assert next(d.status[0] for d in camera.diagnostics[warned:] if recovered(d.status[0])).message == 'running'


def test_diagnostics_warn_after_a_bad_frame_and_recover(ros, face_image):
    node, camera = ros
    # A good frame just before, so that for a whole diagnostics_window the window holds good and bad frames
    # (WARN); a bad frame alone is ERROR ('all frames were bad').
    camera.result(camera.send(face_image))
    camera.send_raw(Image(encoding='yuv999', width=4, height=4, step=8, data=bytes(32)))
    count = len(camera.diagnostics)
    camera.wait_for(lambda: any(d.status[0].level == DiagnosticStatus.WARN and 'bad' in d.status[0].message
                                for d in camera.diagnostics[count:]))
    warned = len(camera.diagnostics)
    deadline = time.monotonic() + 10
    while not any(d.status[0].level == DiagnosticStatus.OK for d in camera.diagnostics[warned:]):
        assert time.monotonic() < deadline, 'diagnostics never went back to OK'
        camera.result(camera.send(face_image))  # good frames keep the input fresh while the bad one ages out
        time.sleep(0.1)
    status = next(d.status[0] for d in camera.diagnostics[warned:] if d.status[0].level == DiagnosticStatus.OK)
    assert status.message == 'running' and status.name == '/emotion_node: emotion pipeline'


def test_diagnostics_warn_when_no_frame_arrives_in_the_window(ros):
    node, camera = ros
    time.sleep(1.2)  # diagnostics_window is 1 s in this fixture
    count = len(camera.diagnostics)
    camera.wait_for(lambda: len(camera.diagnostics) > count)
    status = camera.diagnostics[-1].status[0]
    assert status.level == DiagnosticStatus.WARN and status.message == 'no frames received in the last 1 s'


def test_a_diagnostics_timer_that_fires_as_ctrl_c_comes_ends_quietly(tmp_path):
    """Ctrl-C shuts the context down while a worker thread may still run the timer: what it calls on the
    node then fails, and the stopped multi-threaded executor would report that at exit as an error never
    retrieved."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = EmotionNode(context=context, parameter_overrides=[Parameter('autostart', value=False)])
    try:
        (timer,) = node.timers
        timer.callback()  # publishes while the context is up
        rclpy.shutdown(context=context)
        timer.callback()  # the same, once Ctrl-C has shut the context down: no error
    finally:
        node.destroy_node()


def test_a_node_woken_mid_callback_by_ctrl_c_ends_quietly_and_a_real_failure_still_shows():
    def shut_down_then_fail(node):
        rclpy.shutdown(context=node.context)  # what Ctrl-C does while a callback runs
        raise RuntimeError('Unable to convert call argument to Python object')  # the executor, woken

    assert run_node(lambda: Node('quiet_exit'), 'quiet_exit', shut_down_then_fail) == 0

    def fail(node):
        raise RuntimeError('a real failure')

    with pytest.raises(RuntimeError, match='a real failure'):
        run_node(lambda: Node('loud_exit'), 'loud_exit', fail)


@pytest.mark.parametrize('received, bad, expected_rate, skipped, level, message', [
    (30, 0, 0.0, 0, DiagnosticStatus.OK, 'running'),
    (0, 0, 0.0, 0, DiagnosticStatus.WARN, 'no frames received'),
    (30, 2, 0.0, 0, DiagnosticStatus.WARN, 'dropped 2 bad frames'),
    (5, 5, 0.0, 0, DiagnosticStatus.ERROR, 'all 5 frames'),
    (10, 0, 30.0, 0, DiagnosticStatus.WARN, 'frames arrive at 10.0 Hz, expected 30 Hz'),
    (28, 0, 30.0, 0, DiagnosticStatus.OK, 'running'),
    (30, 0, 0.0, 6, DiagnosticStatus.WARN, 'skipped 6 of 30 frames in the last 1 s: processing falls behind'),
    (30, 0, 0.0, 3, DiagnosticStatus.OK, 'running'),
    (30, 2, 0.0, 10, DiagnosticStatus.WARN, 'dropped 2 bad frames'),
])
def test_pipeline_health_levels(received, bad, expected_rate, skipped, level, message):
    got_level, got_message = pipeline_health(received, bad, 1.0, expected_rate, skipped)
    assert got_level == level and message in got_message


def test_count_since_drops_only_the_times_before_the_cutoff():
    times = deque([1.0, 2.0, 3.0, 4.0])
    assert count_since(times, 2.5) == 2 and list(times) == [3.0, 4.0]
    assert count_since(times, 3.0) == 2  # a time at the cutoff stays
    assert count_since(times, 9.0) == 0 and not times


def test_frame_slots_count_only_the_frames_of_the_window_and_forget_older_ones():
    slots = FrameSlots()
    for index in range(3):  # the second and third replace a waiting frame: two skipped
        slots.put('/camera', index)
    assert slots.recent_counts(10.0) == (3, 2)
    time.sleep(1.0)
    slots.put('/other_camera', 3)
    assert slots.recent_counts(0.5) == (1, 0)
    assert len(slots.received_times) == 1 and not slots.skipped_times  # older times were dropped
    assert (slots.received, slots.skipped) == (4, 2)  # the totals keep counting
    assert slots.take(0.1) == ('/camera', 2)  # the newest frame of the longest-waiting topic


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


def stream_while(camera, image, busy):
    """Face frames at about 20 Hz while the thread ``busy`` runs; the headers sent."""
    headers = []
    while busy.is_alive():
        headers.append(camera.send(image))
        time.sleep(0.05)
    return headers


def test_switches_and_a_self_check_while_frames_flow_lose_nothing(ros, face_image, tmp_path_factory):
    node, camera = ros
    models = Path(node.get_parameter('model_dir').value)
    write_tiny_model(models, 'tiny_other', seed=9)
    responses = []
    switcher = threading.Thread(target=lambda: responses.extend(
        camera.call(camera.switch_client, SwitchModel.Request(model=name)) for name in ['tiny_other', 'tiny'] * 5))
    before = node.stats()
    switcher.start()
    headers = stream_while(camera, face_image, switcher)
    camera.result(camera.send(face_image))
    assert [r.success for r in responses] == [True] * 10 and responses[-1].active_model == 'tiny'
    answered = [camera.arrays[stamp_key(h)] for h in headers if stamp_key(h) in camera.arrays]
    assert answered, 'no frame answered while models were switched'
    for array in answered:  # each answer comes from one whole model
        (face,) = array.emotions
        assert face.model in ('tiny', 'tiny_other') and np.isfinite(face.probabilities).all()
        assert abs(sum(face.probabilities) - 1.0) < 1e-4
    after = node.stats()
    assert after['received'] - before['received'] == \
        sum(after[k] - before[k] for k in ('processed', 'skipped', 'bad'))

    report = {}
    checker = threading.Thread(target=lambda: report.update(response=camera.call(
        camera.self_check_client, RunSelfCheck.Request(attacks=['pgd'], epsilons=[2.0], samples=8))))
    checker.start()
    headers = stream_while(camera, face_image, checker)
    assert report['response'].success, report['response'].message
    assert any(stamp_key(h) in camera.arrays for h in headers), 'frames were not answered during the self-check'


def answered_within_tries(camera, publish, tries=10, timeout=3.0) -> bool:
    """Send a frame with publish(header) until one is answered: best effort may drop a frame under load."""
    for _ in range(tries):
        header = camera.header()
        publish(header)
        try:
            camera.result(header, timeout=timeout)
            return True
        except AssertionError:
            continue
    return False


def test_best_effort_and_reliable_cameras_both_reach_the_node_by_default(face_image, tmp_path):
    assert PARAMETERS['reliable'][0] is False  # the sensor-data default
    write_tiny_model(tmp_path, 'tiny')
    with running_emotion_node([Parameter('model', value='tiny'), Parameter('model_dir', value=str(tmp_path)),
                               Parameter('reliable', value=False), Parameter('video_mode', value=False)]) as (
            node, camera):
        best_effort = camera.create_publisher(Image, 'image_raw', qos_profile_sensor_data)
        deadline = time.monotonic() + 30
        while best_effort.get_subscription_count() == 0:  # a reliable subscription would never match
            assert time.monotonic() < deadline, 'a best-effort camera did not connect'
            time.sleep(0.05)
        assert answered_within_tries(camera, lambda header: best_effort.publish(
            bgr_to_image_message(face_image, header)))
        assert answered_within_tries(camera, lambda header: camera.image_publisher.publish(  # reliable camera
            bgr_to_image_message(face_image, header)))


def test_faces_coming_and_going_keep_every_frame_accounted_and_never_reuse_an_id(ros, face_image, samples_dir):
    """A short soak: face and face-less frames alternating in message time, a track ends in every gap."""
    node, camera = ros
    empty = cv2.imread(str(samples_dir / 'free-mountain-vector-01.jpg'))
    before = node.stats()
    segments = []
    for _ in range(4):
        faces = [camera.result(camera.send(face_image)) for _ in range(3)]  # 1 s apart in message time
        for _ in range(3):
            camera.result(camera.send(empty))
        segments.append({e.face_id for array in faces for e in array.emotions})
    assert all(len(ids) == 1 for ids in segments)
    assert len(set().union(*segments)) == 4  # a new id after each face-less gap, never an old one
    after = node.stats()
    assert after['received'] - before['received'] == 24
    assert sum(after[k] - before[k] for k in ('processed', 'skipped', 'bad')) == 24
