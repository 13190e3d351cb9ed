"""Listens to the REP-155 face topics and /emotion for a few seconds; prints what it saw as JSON.

Run with hri_msgs importable (test_rep155.py builds it). Subscribes to each face's topics as soon as
/humans/faces/tracked names it. Prints 'ready' when subscribed, then one JSON document at the end.
"""
import json
import sys
import time

import rclpy
from hri_msgs.msg import Expression, IdsList, NormalizedRegionOfInterest2D
from rclpy.qos import QoSProfile, ReliabilityPolicy

from fer_ros.msg import EmotionArray


def stamp(header):
    return f'{header.stamp.sec}.{header.stamp.nanosec:09d}'


def main():
    seconds = float(sys.argv[1])
    rclpy.init()
    node = rclpy.create_node('rep155_listener')
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    seen = {'tracked': {}, 'expression': {}, 'roi': {}, 'emotion': {}}
    face_subscriptions = {}

    def on_tracked(message):
        seen['tracked'][stamp(message.header)] = list(message.ids)
        for face_id in message.ids:
            if face_id not in face_subscriptions:
                base = f'/humans/faces/{face_id}'
                face_subscriptions[face_id] = [
                    node.create_subscription(Expression, f'{base}/expression', lambda m, i=face_id: seen[
                        'expression'].__setitem__(f'{i}@{stamp(m.header)}', [m.expression, m.confidence,
                                                                              m.valence, m.arousal]), qos),
                    node.create_subscription(NormalizedRegionOfInterest2D, f'{base}/roi', lambda m, i=face_id: seen[
                        'roi'].__setitem__(f'{i}@{stamp(m.header)}', [m.xmin, m.ymin, m.xmax, m.ymax]), qos)]

    node.create_subscription(IdsList, '/humans/faces/tracked', on_tracked, qos)
    node.create_subscription(EmotionArray, '/emotion', lambda m: seen['emotion'].__setitem__(stamp(m.header), [
        [e.face_id, e.label, e.confidence, e.valence, e.arousal,
         [e.roi.x_offset, e.roi.y_offset, e.roi.width, e.roi.height]] for e in m.emotions]), qos)
    print('ready', flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps(seen), flush=True)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == '__main__':
    main()
