"""The generated interfaces: import, constants, and a round trip between processes."""

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy

from fer_ros import labels
from fer_ros.msg import EmotionArray, EmotionStamped, SelfCheckResult
from fer_ros.srv import RunSelfCheck, SwitchModel

HELPERS = Path(__file__).parent / 'ros_helpers'


def load_helper(name):
    spec = importlib.util.spec_from_file_location(name, HELPERS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_label_constants_match_rep155_names():
    constants = {name: getattr(EmotionStamped, name) for name in
                 ('NEUTRAL', 'ANGRY', 'SAD', 'HAPPY', 'SURPRISED', 'DISGUSTED', 'SCARED', 'CONTEMPTUOUS')}
    assert constants == {name: getattr(labels, name) for name in constants}
    assert set(labels.FER2013_LABELS) <= set(constants.values())


def test_service_fields_are_command_line_friendly():
    request = RunSelfCheck.Request(attacks=['fgsm'], epsilons=[2.0, 8.0], samples=16, source='seen')
    assert list(request.epsilons) == [2.0, 8.0]
    response = RunSelfCheck.Response(results=[SelfCheckResult(attack='pgd', epsilon=4.0, flip_rate=0.5)])
    assert response.results[0].attack == 'pgd'
    switch = SwitchModel.Response(success=False, active_model='a', available_models=['a', 'b'])
    assert list(switch.available_models) == ['a', 'b']


def test_emotion_array_crosses_processes_intact():
    expected = load_helper('publish_emotion_array').build_message()
    received = []
    rclpy.init()
    try:
        node = rclpy.create_node('emotion_array_listener')
        node.create_subscription(EmotionArray, 'emotion_roundtrip', received.append,
                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        publisher = subprocess.Popen([sys.executable, str(HELPERS / 'publish_emotion_array.py')],
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30.0
        while not received and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        _, stderr = publisher.communicate(timeout=30)
        assert publisher.returncode == 0, stderr
        node.destroy_node()
    finally:
        rclpy.shutdown()

    assert len(received) == 1
    message = received[0]
    assert message == expected
    assert [face.face_id for face in message.emotions] == ['face_0', 'face_1']
    assert message.emotions[0].label == EmotionStamped.HAPPY
    assert abs(sum(message.emotions[1].probabilities) - 1.0) < 1e-6
    assert message.header.frame_id == 'head_camera_optical'
