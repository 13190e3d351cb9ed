"""camera_source: publish a video file, an image folder or a camera as sensor_msgs/Image.

Each frame is stamped with the time it is published. The node ends by itself
when a file or folder is exhausted (unless loop is set). With
wait_for_subscriber, the first frame waits until a subscription is matched,
so a short video is not lost to discovery.
"""

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from fer_ros.nodes.entry import run_node, unless_shut_down
from fer_ros.nodes.ros_image import bgr_to_compressed_message, bgr_to_image_message
from fer_ros.vision.frame_source import FrameSource

PARAMETERS = {
    'source': ('', 'video file, image folder, or OpenCV camera index ("0")'),
    'topic': ('image_raw', 'output topic (sensor_msgs/Image; CompressedImage when compressed is set)'),
    'frame_id': ('camera', 'header.frame_id of the published images'),
    'rate': (0.0, 'frames per second; 0: the video\'s own rate (10 Hz for folders and cameras)'),
    'encoding': ('bgr8', 'raw image encoding: bgr8, rgb8 or mono8'),
    'compressed': (False, 'publish sensor_msgs/CompressedImage (jpeg) instead of Image'),
    'loop': (False, 'start again at the end of a file or folder'),
    'max_frames': (0, 'stop after this many frames (0: no limit)'),
    'wait_for_subscriber': (False, 'hold the first frame until a subscription is matched'),
}
FALLBACK_RATE = 10.0
ACK_TIMEOUT_S = 2.0


class CameraSource(Node):
    def __init__(self, **kwargs):
        super().__init__('camera_source', **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        param = lambda name: self.get_parameter(name).value  # noqa: E731
        self._source_name = param('source')
        self._source = FrameSource(self._source_name)
        rate = param('rate') or self._source.native_rate or FALLBACK_RATE
        if rate <= 0:
            raise ValueError(f'parameter rate must be >= 0, got {rate}')
        self._encoding = param('encoding')
        if self._encoding not in ('bgr8', 'rgb8', 'mono8'):
            raise ValueError(f'parameter encoding must be bgr8, rgb8 or mono8, got {self._encoding!r}')
        self._compressed = param('compressed')
        self._frame_id = param('frame_id')
        self._loop = param('loop')
        self._max_frames = param('max_frames')
        self._waiting = param('wait_for_subscriber')
        # Reliable with a few frames of history: a subscriber that is briefly busy still gets every frame.
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._publisher = self.create_publisher(CompressedImage if self._compressed else Image, param('topic'), qos)
        self._frames = self._source.frames()
        self.published = 0
        self.done = False
        self.create_timer(1.0 / rate, self._publish_next)
        self.get_logger().info(f'publishing {self._source_name} on {self._publisher.topic_name} at {rate:.1f} Hz')

    def _publish_next(self) -> None:
        if self.done:
            return
        if self._waiting:
            if self._publisher.get_subscription_count() == 0:
                return
            self._waiting = False
            self.get_logger().info('a subscriber is matched: starting')
        frame = next(self._frames, None)
        if frame is None and self._loop and self.published:
            self._source.close()
            self._source = FrameSource(self._source_name)
            self._frames = self._source.frames()
            frame = next(self._frames, None)
        if frame is None or (self._max_frames and self.published >= self._max_frames):
            self.done = True
            self.get_logger().info(f'{self._source_name}: done after {self.published} frames')
            return
        header = Image().header
        header.stamp = self.get_clock().now().to_msg()
        header.frame_id = self._frame_id
        message = (bgr_to_compressed_message(frame, header) if self._compressed
                   else bgr_to_image_message(frame, header, self._encoding))
        with unless_shut_down(self.context):  # the timer fired as Ctrl-C came
            self._publisher.publish(message)
        self.published += 1

    def flush(self) -> bool:
        """Wait (at most ACK_TIMEOUT_S) until reliable subscribers have the last frame; False on timeout."""
        return self._publisher.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S))

    def destroy_node(self):
        self._source.close()
        return super().destroy_node()


def spin_until_done(node: CameraSource) -> None:
    """Publish until the source is exhausted, then wait for the last frames to be acknowledged."""
    while rclpy.ok() and not node.done:
        rclpy.spin_once(node, timeout_sec=0.1)
    if node.done and not node.flush():
        node.get_logger().warning(f'the last frames were not acknowledged within {ACK_TIMEOUT_S:g} s')


def main(args=None):
    return run_node(CameraSource, 'camera_source', spin_until_done, args)


if __name__ == '__main__':
    raise SystemExit(main())
