"""REP-155 (ROS4HRI) output: /humans/faces/tracked, and per face /humans/faces/<id>/roi and .../expression.

Needs ROS4HRI's ``hri_msgs`` (not on any registry here; :func:`hri_msgs_available`
says whether it can be imported). Face ids are the node's track ids (unique,
REP-155 style); a face's topics are removed once its track has not been seen
for ``max_age_s`` (message time).
"""

from fer_ros.labels import ANGRY, CONTEMPTUOUS, DISGUSTED, HAPPY, NEUTRAL, SAD, SCARED, SURPRISED

# fer_ros label -> REP-155 expression. REP-155 has no contempt: CK+'s contemptuous is published as
# disgusted, the nearest REP-155 expression (both reject; many data sets merge them). EmotionStamped
# keeps the model's own label.
REP155_EXPRESSIONS = {NEUTRAL: 'neutral', ANGRY: 'angry', SAD: 'sad', HAPPY: 'happy', SURPRISED: 'surprised',
                      DISGUSTED: 'disgusted', SCARED: 'scared', CONTEMPTUOUS: 'disgusted'}
TRACKED_TOPIC = '/humans/faces/tracked'


def hri_msgs_available() -> bool:
    try:
        from hri_msgs.msg import Expression, IdsList, NormalizedRegionOfInterest2D  # noqa: F401
    except ImportError:
        return False
    return True


class Rep155Output:
    """Publishes one frame's faces on the REP-155 topics of ``node``."""

    def __init__(self, node, max_age_s: float):
        from hri_msgs.msg import Expression, IdsList, NormalizedRegionOfInterest2D
        self._types = Expression, IdsList, NormalizedRegionOfInterest2D
        self._node = node
        self.max_age_s = max_age_s
        self._tracked = node.create_publisher(IdsList, TRACKED_TOPIC, 10)
        self._faces: dict[str, tuple[object, object, float]] = {}  # id -> (roi, expression publishers, last seen)

    def publish(self, header, faces, image_size: tuple[int, int], now: float) -> None:
        """``faces``: FaceEmotion list of one frame; ``image_size``: (height, width); ``now``: message time (s)."""
        expression_type, ids_type, roi_type = self._types
        height, width = image_size
        for face in faces:
            if face.face_id not in self._faces:
                base = f'/humans/faces/{face.face_id}'
                self._faces[face.face_id] = (self._node.create_publisher(roi_type, f'{base}/roi', 10),
                                             self._node.create_publisher(expression_type, f'{base}/expression', 10),
                                             now)
            roi_publisher, expression_publisher, _ = self._faces[face.face_id]
            self._faces[face.face_id] = (roi_publisher, expression_publisher, now)
            x, y, w, h = face.box
            roi_publisher.publish(roi_type(header=header, xmin=x / width, ymin=y / height, xmax=(x + w) / width,
                                           ymax=(y + h) / height, c=face.confidence))
            expression_publisher.publish(expression_type(
                header=header, expression=REP155_EXPRESSIONS[face.label], valence=face.valence,
                arousal=face.arousal, confidence=face.confidence))
        self._tracked.publish(ids_type(header=header, ids=[face.face_id for face in faces]))
        for face_id, (roi_publisher, expression_publisher, last_seen) in list(self._faces.items()):
            if not 0.0 <= now - last_seen <= self.max_age_s:
                self._node.destroy_publisher(roi_publisher)
                self._node.destroy_publisher(expression_publisher)
                del self._faces[face_id]

    @property
    def face_topics(self) -> list[str]:
        return sorted(f'/humans/faces/{face_id}' for face_id in self._faces)

    def close(self) -> None:
        for roi_publisher, expression_publisher, _ in self._faces.values():
            self._node.destroy_publisher(roi_publisher)
            self._node.destroy_publisher(expression_publisher)
        self._faces.clear()
        self._node.destroy_publisher(self._tracked)
