"""emotion_echo: print one line per EmotionArray (what the pipeline publishes)."""

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from fer_ros.msg import EmotionArray


def describe(message: EmotionArray) -> str:
    stamp = message.header.stamp.sec + message.header.stamp.nanosec * 1e-9
    faces = ', '.join(f'{e.face_id} {e.label} {e.confidence:.2f} (v {e.valence:+.2f} a {e.arousal:+.2f}) '
                      f'box {e.roi.x_offset},{e.roi.y_offset} {e.roi.width}x{e.roi.height}'
                      for e in message.emotions)
    return f'[{stamp:.3f} {message.header.frame_id}] {len(message.emotions)} face(s){": " + faces if faces else ""}'


class EmotionEcho(Node):
    def __init__(self, **kwargs):
        super().__init__('emotion_echo', **kwargs)
        self.received = 0
        self.create_subscription(EmotionArray, 'emotion', self._on_emotion, 10)

    def _on_emotion(self, message: EmotionArray) -> None:
        self.received += 1
        print(describe(message), flush=True)


def main(args=None):
    rclpy.init(args=args)
    node = EmotionEcho()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
