"""The shipped Fast DDS profile: what fer-run and the launch file start their nodes with."""

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from fer_ros.dds_profile import PROFILE_VARIABLE, large_image_profile, use_large_image_profile

HELPER = Path(__file__).resolve().parent / 'ros_helpers' / 'publish_large_frames.py'
FRAME_BYTES = 640 * 480 * 3
NAMESPACE = '{http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles}'


def test_profile_is_set_unless_the_environment_names_one():
    environ = {}
    assert use_large_image_profile(environ) == str(large_image_profile()) == environ[PROFILE_VARIABLE]
    assert large_image_profile().is_file()
    mine = {PROFILE_VARIABLE: '/etc/my_profile.xml'}
    assert use_large_image_profile(mine) == '/etc/my_profile.xml'
    defaults = {PROFILE_VARIABLE: ''}
    assert use_large_image_profile(defaults) == '' and PROFILE_VARIABLE not in defaults


def test_profile_keeps_udp_and_gives_shared_memory_room_for_large_frames():
    root = ElementTree.parse(large_image_profile()).getroot()
    transports = {d.find(f'{NAMESPACE}transport_id').text: d for d in root.iter(f'{NAMESPACE}transport_descriptor')}
    kinds = {transport_id: d.find(f'{NAMESPACE}type').text for transport_id, d in transports.items()}
    assert sorted(kinds.values()) == ['SHM', 'UDPv4']
    shm = next(d for d in transports.values() if d.find(f'{NAMESPACE}type').text == 'SHM')
    assert int(shm.find(f'{NAMESPACE}maxMessageSize').text) >= 1920 * 1080 * 3
    assert int(shm.find(f'{NAMESPACE}segment_size').text) >= 2 * int(shm.find(f'{NAMESPACE}maxMessageSize').text)
    participant = root.find(f'{NAMESPACE}participant')
    assert participant.get('is_default_profile') == 'true'
    used = [t.text for t in participant.iter(f'{NAMESPACE}transport_id')]
    assert sorted(used) == sorted(transports)


@pytest.mark.skipif(not Path('/dev/shm').is_dir(), reason='no /dev/shm: Fast DDS uses UDP only')
def test_a_camera_with_the_profile_sends_whole_frames_through_a_large_shared_memory_segment():
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('large_frame_listener', context=context)
    frames = []
    node.create_subscription(Image, '/large_frames', frames.append,
                             QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    environ = dict(os.environ)
    environ.pop(PROFILE_VARIABLE, None)
    use_large_image_profile(environ)
    camera = subprocess.Popen([sys.executable, str(HELPER)], env=environ, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(frames) < 5 and time.monotonic() < deadline and camera.poll() is None:
            executor.spin_once(timeout_sec=0.1)
        output, _ = camera.communicate(timeout=30)
    finally:
        if camera.poll() is None:
            camera.kill()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    assert len(frames) == 5
    rows, columns = np.indices((480, 640))
    for k, frame in enumerate(frames):
        pixels = np.frombuffer(frame.data, np.uint8).reshape(480, 640, 3)
        np.testing.assert_array_equal(pixels[:, :, 1], (rows + columns + k) % 256)
    segments = json.loads(output.strip().splitlines()[-1])
    # Fast DDS's default segment is about 0.5 MB; the profile's holds 16 MB.
    assert max(segments.values()) >= 16 * 1024 * 1024, segments
