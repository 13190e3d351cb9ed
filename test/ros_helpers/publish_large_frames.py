"""Publish five 640x480 bgr8 frames on /large_frames once subscribed, then print (JSON) the sizes of the
Fast DDS shared-memory files this process created. The pixel of frame k at (y, x) is (x + y + k) % 256."""
import json
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

before = {path.name for path in Path('/dev/shm').glob('fastdds_*')}
rclpy.init()
node = rclpy.create_node('large_frame_publisher')
publisher = node.create_publisher(Image, '/large_frames', QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
deadline = time.monotonic() + 30
while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
    time.sleep(0.05)
rows, columns = np.indices((480, 640))
for k in range(5):
    pixels = np.repeat(((rows + columns + k) % 256).astype(np.uint8)[:, :, None], 3, axis=2)
    publisher.publish(Image(height=480, width=640, encoding='bgr8', step=1920, data=pixels.tobytes()))
    time.sleep(0.1)
print(json.dumps({path.name: path.stat().st_size for path in Path('/dev/shm').glob('fastdds_*')
                  if path.name not in before}))
time.sleep(0.5)
node.destroy_node()
rclpy.shutdown()
