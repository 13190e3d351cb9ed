"""camera_source: a folder of images onto a topic, in order, holding its first frame for a subscriber on request."""

import time

import cv2
import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from fer_ros.nodes.camera_source import CameraSource

WIDTHS = (64, 80, 96)


@pytest.fixture
def image_folder(tmp_path):
    """Three frames told apart by their width."""
    for index, width in enumerate(WIDTHS):
        image = np.full((48, width, 3), 40 * index, np.uint8)
        assert cv2.imwrite(str(tmp_path / f'frame_{index}.png'), image)
    return tmp_path


@pytest.fixture
def ros_context():
    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    executor = SingleThreadedExecutor(context=context)
    yield context, executor
    executor.shutdown()
    rclpy.try_shutdown(context=context)


def spin_until(executor, condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)


def start_source(context, executor, folder, wait_for_subscriber: bool) -> CameraSource:
    source = CameraSource(context=context, parameter_overrides=[
        Parameter('source', value=str(folder)), Parameter('topic', value='frames'),
        Parameter('rate', value=50.0), Parameter('wait_for_subscriber', value=wait_for_subscriber)])
    executor.add_node(source)
    return source


def test_waiting_source_publishes_nothing_until_subscribed_then_every_frame_in_order(ros_context, image_folder):
    context, executor = ros_context
    source = start_source(context, executor, image_folder, wait_for_subscriber=True)
    spin_until(executor, lambda: False, 1.0)  # 50 ticks at 50 Hz with nobody listening
    assert source.published == 0 and not source.done

    received = []
    listener = rclpy.create_node('frame_listener', context=context)
    listener.create_subscription(Image, 'frames', received.append,
                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    executor.add_node(listener)
    spin_until(executor, lambda: source.done and len(received) == len(WIDTHS), 30.0)
    assert source.done and source.published == len(WIDTHS)
    assert [message.width for message in received] == list(WIDTHS)
    assert all(message.encoding == 'bgr8' and message.header.frame_id == 'camera' for message in received)
    listener.destroy_node()
    source.destroy_node()


def test_source_without_waiting_publishes_with_nobody_listening(ros_context, image_folder):
    context, executor = ros_context
    source = start_source(context, executor, image_folder, wait_for_subscriber=False)
    spin_until(executor, lambda: source.done, 10.0)
    assert source.done and source.published == len(WIDTHS)
    source.destroy_node()
