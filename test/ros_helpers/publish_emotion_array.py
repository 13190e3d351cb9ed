"""Publish one fully populated EmotionArray once a subscriber is there (test helper)."""

import sys
import time

import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy

from fer_ros.msg import EmotionArray, EmotionStamped


def build_message() -> EmotionArray:
    labels = ['angry', 'disgusted', 'scared', 'happy', 'sad', 'surprised', 'neutral']
    faces = []
    # Values exact in float32, so the received message compares equal.
    for index, probabilities in enumerate(([0.0625, 0.0625, 0.0625, 0.5625, 0.125, 0.0625, 0.0625],
                                           [0.125, 0.0, 0.25, 0.125, 0.25, 0.125, 0.125])):
        face = EmotionStamped()
        face.header.stamp.sec, face.header.stamp.nanosec = 1700000000, 123456789
        face.header.frame_id = 'head_camera_optical'
        face.face_id = f'face_{index}'
        face.roi.x_offset, face.roi.y_offset = 10 + index, 20 + index
        face.roi.width, face.roi.height = 100, 120
        face.roi.do_rectify = bool(index)
        face.labels = labels
        face.probabilities = probabilities
        best = max(range(len(labels)), key=probabilities.__getitem__)
        face.label, face.confidence = labels[best], probabilities[best]
        face.valence, face.arousal = 0.5 - index, -0.25 * index
        face.model = 'cnn_se_gcn_fer2013'
        faces.append(face)
    message = EmotionArray(emotions=faces)
    message.header = faces[0].header
    return message


def main() -> int:
    rclpy.init()
    node = rclpy.create_node('emotion_array_publisher')
    publisher = node.create_publisher(
        EmotionArray, 'emotion_roundtrip', QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    deadline = time.monotonic() + 20.0
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    if publisher.get_subscription_count() == 0:
        print('no subscriber appeared', file=sys.stderr)
        return 1
    publisher.publish(build_message())
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
