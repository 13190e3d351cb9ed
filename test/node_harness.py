"""A test camera + listener node and a context manager that spins it beside an emotion node."""

import contextlib
import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from fer_ros.msg import EmotionArray, EmotionStamped
from fer_ros.nodes.emotion_node import EmotionNode
from fer_ros.nodes.entry import MultiThreadedExecutorWithoutBusyWait
from fer_ros.nodes.ros_image import bgr_to_compressed_message, bgr_to_image_message
from fer_ros.srv import RunSelfCheck, SwitchModel

TIMEOUT_S = 60.0


def stamp_key(header) -> tuple[int, int]:
    return header.stamp.sec, header.stamp.nanosec


class CameraAndListener(Node):
    """Publishes frames with unique stamps and collects what the emotion node publishes."""

    def __init__(self, context):
        super().__init__('test_camera', context=context)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.image_publisher = self.create_publisher(Image, 'image_raw', qos)
        self.compressed_publisher = self.create_publisher(CompressedImage, 'image_raw/compressed', qos)
        self._condition = threading.Condition()
        self.arrays: dict[tuple[int, int], EmotionArray] = {}
        self.faces: dict[tuple[int, int], list[EmotionStamped]] = {}
        self.diagnostics: list[DiagnosticArray] = []
        self.annotated: dict[tuple[int, int], Image] = {}
        self.create_subscription(EmotionArray, 'emotion', self._on_array, 10)
        self.create_subscription(EmotionStamped, 'emotion/faces', self._on_face, 10)
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self.create_subscription(Image, 'emotion/image_annotated', self._on_annotated, 10)
        self.switch_client = self.create_client(SwitchModel, 'emotion_node/switch_model')
        self.self_check_client = self.create_client(RunSelfCheck, 'emotion_node/run_self_check')
        self._next_stamp = 1000

    def _on_array(self, message):
        with self._condition:
            self.arrays[stamp_key(message.header)] = message
            self._condition.notify_all()

    def _on_face(self, message):
        with self._condition:
            self.faces.setdefault(stamp_key(message.header), []).append(message)
            self._condition.notify_all()

    def _on_annotated(self, message):
        with self._condition:
            self.annotated[stamp_key(message.header)] = message
            self._condition.notify_all()

    def _on_diagnostics(self, message):
        with self._condition:
            self.diagnostics.append(message)
            self._condition.notify_all()

    def publishers_in_use(self, node: EmotionNode):
        """Our publishers whose topics the emotion node reads."""
        return [p for p in (self.image_publisher, self.compressed_publisher) if p.topic_name in node.input_topics]

    def header(self):
        self._next_stamp += 1
        message = Image().header
        message.stamp.sec, message.stamp.nanosec = self._next_stamp, 123456789
        message.frame_id = 'test_camera_optical'
        return message

    def send(self, image: np.ndarray, compressed: bool = False):
        header = self.header()
        if compressed:
            self.compressed_publisher.publish(bgr_to_compressed_message(image, header))
        else:
            self.image_publisher.publish(bgr_to_image_message(image, header))
        return header

    def send_raw(self, message):
        message.header = self.header()
        (self.compressed_publisher if isinstance(message, CompressedImage) else self.image_publisher).publish(message)
        return message.header

    def wait_for(self, predicate, timeout: float = TIMEOUT_S):
        with self._condition:
            assert self._condition.wait_for(predicate, timeout), 'timed out waiting for the emotion node'

    def result(self, header, timeout: float = TIMEOUT_S) -> EmotionArray:
        key = stamp_key(header)
        self.wait_for(lambda: key in self.arrays, timeout)
        return self.arrays[key]

    def call(self, client, request, timeout: float = TIMEOUT_S):
        assert client.wait_for_service(timeout_sec=timeout), f'service {client.srv_name} not available'
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            assert time.monotonic() < deadline, f'service {client.srv_name} did not answer'
            time.sleep(0.02)
        return future.result()



@contextlib.contextmanager
def running_emotion_node(parameters, wait_for_subscription: bool = True):
    """(EmotionNode with these parameter overrides, CameraAndListener), spun together in a private context.

    ``wait_for_subscription``: return once the node reads our publishers (an active node).
    """
    context = rclpy.Context()
    rclpy.init(context=context)
    # Our test camera is reliable: a reliable subscription makes every frame arrive (or be counted as
    # skipped) however loaded the machine; tests of the best-effort default say reliable=False.
    if not any(parameter.name == 'reliable' for parameter in parameters):
        parameters = [Parameter('reliable', value=True), *parameters]
    node = EmotionNode(context=context, parameter_overrides=parameters)
    camera = CameraAndListener(context)
    executor = MultiThreadedExecutorWithoutBusyWait(num_threads=4, context=context)  # as the node's main()
    executor.add_node(node)
    executor.add_node(camera)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        # Discovery: the node must see our publishers before the first frame.
        deadline = time.monotonic() + TIMEOUT_S
        while wait_for_subscription and any(publisher.get_subscription_count() == 0
                                            for publisher in camera.publishers_in_use(node)):
            assert time.monotonic() < deadline, 'emotion node never subscribed'
            time.sleep(0.05)
        yield node, camera
    finally:
        executor.shutdown()
        spinner.join(timeout=10)
        node.destroy_node()
        camera.destroy_node()
        rclpy.shutdown(context=context)
