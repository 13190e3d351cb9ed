"""The emotion node as a managed node: configure, activate, deactivate and cleanup through the real
lifecycle services, with frames flowing."""

import threading
import time

import cv2
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.parameter import Parameter

from fer_ros.srv import RunSelfCheck, SwitchModel
from model_fixtures import write_tiny_model
from node_harness import running_emotion_node, stamp_key


@pytest.fixture(scope='module')
def ros(tmp_path_factory):
    models = tmp_path_factory.mktemp('models')
    write_tiny_model(models, 'tiny')
    with running_emotion_node([Parameter('model', value='tiny'), Parameter('model_dir', value=str(models)),
                               Parameter('autostart', value=False), Parameter('video_mode', value=False),
                               Parameter('diagnostics_period', value=0.25)],
                              wait_for_subscription=False) as (node, camera):
        camera.change_client = camera.create_client(ChangeState, 'emotion_node/change_state')
        camera.state_client = camera.create_client(GetState, 'emotion_node/get_state')
        yield node, camera


@pytest.fixture(scope='module')
def face_image(samples_dir):
    return cv2.imread(str(samples_dir / 'single_face.jpg'))


def transition(camera, transition_id):
    return camera.call(camera.change_client, ChangeState.Request(transition=Transition(id=transition_id))).success


def state(camera) -> str:
    return camera.call(camera.state_client, GetState.Request()).current_state.label


def wait_until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, 'condition not reached'
        time.sleep(0.05)


class FrameStream:
    """Face frames at about 20 Hz from a thread, while the test changes the node's state."""

    def __init__(self, camera, image):
        self.camera, self.image, self.headers = camera, image, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self):
        while not self._stop.is_set():
            self.headers.append(self.camera.send(self.image))
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def answered_since(self, index):
        return [h for h in self.headers[index:] if stamp_key(h) in self.camera.arrays]


def test_lifecycle_from_unconfigured_to_active_and_back_with_frames_flowing(ros, face_image):
    node, camera = ros
    assert state(camera) == 'unconfigured' and node.lifecycle_state == 'unconfigured'
    refused = camera.call(camera.switch_client, SwitchModel.Request(model='tiny'))
    assert not refused.success and 'unconfigured' in refused.message
    assert camera.image_publisher.get_subscription_count() == 0

    assert transition(camera, Transition.TRANSITION_CONFIGURE) and state(camera) == 'inactive'
    assert camera.image_publisher.get_subscription_count() == 0  # configured: model loaded, nothing read yet

    with FrameStream(camera, face_image) as stream:
        assert transition(camera, Transition.TRANSITION_ACTIVATE) and state(camera) == 'active'
        wait_until(lambda: stream.answered_since(0))
        assert len(camera.arrays[stamp_key(stream.answered_since(0)[0])].emotions) == 1
        assert node.worker_alive  # both stages: detect, then classify and publish

        assert transition(camera, Transition.TRANSITION_DEACTIVATE) and state(camera) == 'inactive'
        # Inactive: unsubscribed, no processing thread; frames keep coming and none is taken or answered.
        assert not node.subscriptions_in_use and node.worker_alive is False
        wait_until(lambda: camera.image_publisher.get_subscription_count() == 0)
        processed, mark = node.stats()['processed'], len(stream.headers)
        time.sleep(1.0)
        assert node.stats()['processed'] == processed and not stream.answered_since(mark)
        assert any(d.status[0].message == 'inactive' and d.status[0].level == DiagnosticStatus.OK
                   for d in camera.diagnostics[-4:])

        mark = len(stream.headers)
        assert transition(camera, Transition.TRANSITION_ACTIVATE)
        wait_until(lambda: stream.answered_since(mark))  # serving again, same model

    assert transition(camera, Transition.TRANSITION_DEACTIVATE)
    assert transition(camera, Transition.TRANSITION_CLEANUP) and state(camera) == 'unconfigured'
    assert node.serving_model == ''  # model and detectors released
    refused = camera.call(camera.self_check_client, RunSelfCheck.Request())
    assert not refused.success and 'unconfigured' in refused.message


def test_configure_with_a_bad_model_fails_and_leaves_the_node_unconfigured(ros):
    node, camera = ros
    assert state(camera) == 'unconfigured'
    node.set_parameters([Parameter('model', value='missing')])  # accepted: nothing is loaded while unconfigured
    try:
        assert not transition(camera, Transition.TRANSITION_CONFIGURE)
        assert state(camera) == 'unconfigured' and node.serving_model == ''
    finally:
        node.set_parameters([Parameter('model', value='tiny')])
    assert transition(camera, Transition.TRANSITION_CONFIGURE) and node.serving_model == 'tiny'
    assert transition(camera, Transition.TRANSITION_CLEANUP)
