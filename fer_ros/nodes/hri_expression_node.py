"""hri_expression_node: expressions for the faces another ROS4HRI node already tracks (consumer mode).

For robots that run hri_face_detect (or any REP-155 face detector): reads the
ids on ``/humans/faces/tracked`` and each face's crop on
``/humans/faces/<id>/<crop_topic>`` (``cropped`` or ``aligned``), finds the
468-point mesh in the crop, aligns and classifies it, and publishes
``/humans/faces/<id>/expression`` (hri_msgs/Expression) with the crop's header,
keeping the detector's ids. Needs ROS4HRI's ``hri_msgs``.

Each id keeps only its newest unprocessed crop; a worker thread classifies.
"""

import threading

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image

from fer_ros.affect import valence_arousal
from fer_ros.model.serving import load_classifier
from fer_ros.model_store import SHIPPED_MODEL_DIR, ModelStore
from fer_ros.nodes.emotion_node import DEFAULT_MODEL, FrameSlots
from fer_ros.nodes.entry import run_node, spin_with_threads
from fer_ros.nodes.rep155 import REP155_EXPRESSIONS, TRACKED_TOPIC, hri_msgs_available
from fer_ros.nodes.ros_image import message_to_bgr
from fer_ros.vision.alignment import align_face
from fer_ros.vision.face_mesh import FaceMeshDetector
from fer_ros.vision.image_codec import ImageDecodeError
from fer_ros.vision.mirror import mirror_averaged

PARAMETERS = {
    'model': (DEFAULT_MODEL, 'model name, looked up in model_dir then in the shipped weights'),
    'model_dir': ('', 'user model directory searched before the shipped weights; empty for none'),
    'device': ('auto', 'inference device: auto, cpu or cuda'),
    'torch_threads': (1, 'inference threads of PyTorch, LiteRT and ONNX Runtime (0: one per core)'),
    'crop_topic': ('cropped', "per-face image topic under /humans/faces/<id>/: 'cropped' or 'aligned'"),
    'crop_margin': (0.5, 'border added around a crop before the mesh is searched, as a share of its side '
                         '(the face detector needs some context around a tight crop)'),
    'mirror_average': (False, "classify each face and its mirror image and average the two (as the emotion node's "
                              'parameter)'),
}
CROP_TOPICS = ('cropped', 'aligned')


def padded(image: np.ndarray, margin: float) -> tuple[np.ndarray, int]:
    """The crop with a replicated border of ``margin`` x its larger side; (image, border in pixels)."""
    border = int(round(margin * max(image.shape[:2])))
    return np.pad(image, ((border, border), (border, border), (0, 0)), mode='edge'), border


class HriExpressionNode(Node):
    """Expressions of externally tracked REP-155 faces, under their ids."""

    def __init__(self, **kwargs):
        super().__init__('hri_expression_node', **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description, read_only=True))
        param = lambda name: self.get_parameter(name).value  # noqa: E731
        if not hri_msgs_available():
            raise ValueError('hri_msgs is not installed: the consumer mode reads and writes REP-155 topics')
        if param('crop_topic') not in CROP_TOPICS:
            raise ValueError(f'parameter crop_topic must be one of {CROP_TOPICS}, got {param("crop_topic")!r}')
        if not 0.0 <= param('crop_margin') <= 2.0:
            raise ValueError(f'parameter crop_margin must be in [0, 2], got {param("crop_margin")}')
        if param('torch_threads') < 0:
            raise ValueError('parameter torch_threads must be >= 0')
        from hri_msgs.msg import Expression, IdsList
        self._expression_type = Expression
        self._crop_topic, self._margin = param('crop_topic'), param('crop_margin')
        self._mirror_average = param('mirror_average')
        model = param('model')
        self._classifier, notes = load_classifier(ModelStore([param('model_dir'), SHIPPED_MODEL_DIR]).resolve(model),
                                                  device=param('device'), name=model,
                                                  num_threads=param('torch_threads'))
        for note in notes:
            self.get_logger().warning(f'model {model!r} {note[:300]}')
        self._classifier.warm_up()
        self._detector = FaceMeshDetector(max_faces=1, video_mode=False)
        self._faces: dict[str, tuple[object, object]] = {}  # id -> (crop subscription, expression publisher)
        self._faces_lock = threading.Lock()
        self._slots = FrameSlots()
        self.answered = self.without_mesh = self.bad = 0
        self._crops = MutuallyExclusiveCallbackGroup()
        self.create_subscription(IdsList, TRACKED_TOPIC, self._on_tracked,
                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self._worker = threading.Thread(target=self._process_crops, name='hri_expression_worker', daemon=True)
        self._worker.start()
        self.get_logger().info(f'expressions of the faces on {TRACKED_TOPIC} from their {self._crop_topic!r} '
                               f'crops with model {model!r}')

    def _on_tracked(self, message) -> None:
        """Follow the tracked ids: subscribe to new faces' crops, drop the faces that are gone."""
        ids = set(message.ids)
        with self._faces_lock:
            for face_id in ids - set(self._faces):
                base = f'/humans/faces/{face_id}'
                self._faces[face_id] = (
                    self.create_subscription(Image, f'{base}/{self._crop_topic}',
                                             lambda m, i=face_id: self._slots.put(i, m), qos_profile_sensor_data,
                                             callback_group=self._crops),
                    self.create_publisher(self._expression_type, f'{base}/expression', 10))
            for face_id in set(self._faces) - ids:
                subscription, publisher = self._faces.pop(face_id)
                self.destroy_subscription(subscription)
                self.destroy_publisher(publisher)

    def _process_crops(self) -> None:
        while self.context.ok() and not self._slots.closed:
            item = self._slots.take(timeout=0.2)
            if item is None:
                continue
            face_id, message = item
            try:
                self._classify(face_id, message)
            except (ImageDecodeError, ValueError, RuntimeError) as error:  # never die on one crop
                self.bad += 1
                self.get_logger().warning(f'dropped a crop of {face_id}: {error}', throttle_duration_sec=2.0)

    def _classify(self, face_id: str, message) -> None:
        image, _ = padded(message_to_bgr(message), self._margin)
        faces = self._detector.detect(image)
        if not faces:
            self.without_mesh += 1
            return
        crop, landmarks = align_face(image, faces[0].landmarks)
        if self._mirror_average:
            probabilities = mirror_averaged(self._classifier.predict, crop[None], landmarks[None])[0]
        else:
            probabilities = self._classifier.predict(crop[None], landmarks[None])[0]
        labels = self._classifier.labels
        label = labels[int(np.argmax(probabilities))]
        valence, arousal = valence_arousal(probabilities, labels)
        with self._faces_lock:
            face = self._faces.get(face_id)
        if face is None:  # the face left while its crop was classified
            return
        face[1].publish(self._expression_type(header=message.header, expression=REP155_EXPRESSIONS[label],
                                              valence=float(valence), arousal=float(arousal),
                                              confidence=float(probabilities.max())))
        self.answered += 1

    def destroy_node(self):
        self._slots.close()
        self._worker.join(timeout=5.0)
        self._detector.close()
        return super().destroy_node()


def main(args=None):
    return run_node(HriExpressionNode, 'hri_expression_node', spin_with_threads(2), args)


if __name__ == '__main__':
    raise SystemExit(main())
