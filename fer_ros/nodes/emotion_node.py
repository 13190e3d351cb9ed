"""emotion_node: camera images in, EmotionArray out, plus model switching and self-checks.

Topics (relative names, so a namespace or remapping moves them together):
  in   <image_topics>             sensor_msgs/Image
  in   <compressed_image_topics>  sensor_msgs/CompressedImage (jpeg, png)
  out  emotion                    fer_ros/EmotionArray, one per processed frame
  out  emotion/faces              fer_ros/EmotionStamped, one per face (publish_per_face)
  out  emotion/image_annotated    sensor_msgs/Image (publish_annotated, throttled)
  out  /diagnostics               diagnostic_msgs/DiagnosticArray
Services:
  ~/switch_model    fer_ros/srv/SwitchModel
  ~/run_self_check  fer_ros/srv/RunSelfCheck

Frames are taken newest-first: each input topic keeps only its latest
unprocessed frame, a frame replaced before it was processed counts as skipped,
and a worker thread processes frames so callbacks never queue up behind inference.
"""

import json
import os
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from fer_ros.model.checkpoint import ModelLoadError
from fer_ros.model.inference import ExpressionClassifier, resolve_device
from fer_ros.model_store import SHIPPED_MODEL_DIR, ModelNameError, ModelStore
from fer_ros.msg import EmotionArray, EmotionStamped, SelfCheckResult
from fer_ros.nodes.ros_image import bgr_to_image_message, message_to_bgr
from fer_ros.pipeline import EmotionPipeline, FaceEmotion, PipelineSettings
from fer_ros.robustness import ATTACKS, SelfCheckError, run_self_check
from fer_ros.srv import RunSelfCheck, SwitchModel
from fer_ros.vision.annotate import annotate_faces
from fer_ros.vision.image_codec import ImageDecodeError

DEFAULT_MODEL = 'cnn_se_gcn_fer2013'

# name: (default, description); every parameter of the node, documented in the README.
PARAMETERS = {
    'image_topics': (['image_raw'], 'sensor_msgs/Image topics to read (bgr8, rgb8, bgra8, rgba8, mono8, mono16)'),
    'compressed_image_topics': ([''], 'sensor_msgs/CompressedImage topics to read (jpeg, png); empty for none'),
    'reliable': (True, 'subscribe with reliable QoS (False: best effort, like sensor-data QoS)'),
    'model': (DEFAULT_MODEL, 'model name, looked up in model_dir then in the shipped weights'),
    'model_dir': ('', 'user model directory searched before the shipped weights; empty for none'),
    'device': ('auto', 'inference device: auto, cpu or cuda'),
    'torch_threads': (1, 'PyTorch intra-op threads for inference (0: torch default, one per core); 1 leaves '
                         'the other cores to image decoding, MediaPipe and the camera driver'),
    'max_faces': (4, 'most faces per frame, 1 to 32'),
    'min_detection_confidence': (0.5, 'MediaPipe face detection threshold, 0 to 1'),
    'video_mode': (True, 'let MediaPipe track landmarks between frames of a stream (False: every frame alone)'),
    'landmark_backend': ('mediapipe', 'face detection + mesh: mediapipe (CPU) or torch (same models in PyTorch, '
                                      'on the inference device)'),
    'track_iou_threshold': (0.3, 'least box IoU for a face to keep its track id'),
    'track_max_age': (1.0, 'seconds a track survives without its face'),
    'smoothing': (1.0, 'per-track probability smoothing factor in (0, 1]; 1 disables smoothing'),
    'publish_per_face': (True, 'also publish each face as EmotionStamped on emotion/faces'),
    'publish_annotated': (False, 'publish emotion/image_annotated with boxes, labels and confidence'),
    'annotated_max_rate': (5.0, 'most annotated images per second (0: every processed frame)'),
    'diagnostics_period': (1.0, 'seconds between /diagnostics messages'),
    'seen_crops': (64, 'recent face crops kept for the self-check on seen faces'),
    'self_check_samples': (32, 'default number of samples for run_self_check'),
    'report_dir': ('', 'where self-check reports are written; empty: $ROS_HOME/fer_ros or ~/.ros/fer_ros'),
}

DEVICES = ('auto', 'cpu', 'cuda')


class FrameSlots:
    """The newest unprocessed frame of each input topic; replaced frames count as skipped."""

    def __init__(self):
        self._frames: dict[str, tuple[object, float]] = {}
        self._condition = threading.Condition()
        self.received = 0
        self.skipped = 0
        self.closed = False

    def put(self, topic: str, message) -> None:
        with self._condition:
            self.received += 1
            if topic in self._frames:
                self.skipped += 1
            self._frames[topic] = (message, time.monotonic())
            self._condition.notify()

    def take(self, timeout: float) -> tuple[str, object] | None:
        """The oldest-waiting topic's frame, or None after timeout or close."""
        with self._condition:
            if not self._frames and not self.closed:
                self._condition.wait(timeout)
            if not self._frames or self.closed:
                return None
            topic = min(self._frames, key=lambda t: self._frames[t][1])
            message, _ = self._frames.pop(topic)
            return topic, message

    def close(self) -> None:
        with self._condition:
            self.closed = True
            self._condition.notify_all()


class EmotionNode(Node):
    """Facial expression recognition on camera topics."""

    def __init__(self, **kwargs):
        super().__init__('emotion_node', **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        self._device = self._param('device')
        if self._device not in DEVICES:
            raise ValueError(f'parameter device must be one of {DEVICES}, got {self._device!r}')
        if self._param('torch_threads') < 0:
            raise ValueError('parameter torch_threads must be >= 0')
        if self._param('torch_threads'):
            torch.set_num_threads(self._param('torch_threads'))
        settings = self._pipeline_settings()
        self._store = ModelStore([self._param('model_dir'), SHIPPED_MODEL_DIR])
        self._pipeline = EmotionPipeline(self._load_classifier(self._param('model')), settings)
        self._switch_lock = threading.Lock()
        self._self_check_lock = threading.Lock()

        self._emotion_publisher = self.create_publisher(EmotionArray, 'emotion', 10)
        self._face_publisher = (self.create_publisher(EmotionStamped, 'emotion/faces', 10)
                                if self._param('publish_per_face') else None)
        self._annotated_publisher = (self.create_publisher(Image, 'emotion/image_annotated', 2)
                                     if self._param('publish_annotated') else None)
        self._annotated_period = 1.0 / self._param('annotated_max_rate') if self._param('annotated_max_rate') > 0 else 0.0
        self._last_annotated = 0.0
        self._diagnostics_publisher = self.create_publisher(DiagnosticArray, '/diagnostics', 10)

        self._slots = FrameSlots()
        self._stats_lock = threading.Lock()
        self._processed = 0
        self._bad_frames = 0
        self._last_error = ''
        self._last_faces = 0
        self._latencies = deque(maxlen=300)
        self._processed_times = deque(maxlen=300)
        self._subscribe_inputs()

        services = MutuallyExclusiveCallbackGroup()
        self_check = MutuallyExclusiveCallbackGroup()
        self.create_service(SwitchModel, '~/switch_model', self._on_switch_model, callback_group=services)
        self.create_service(RunSelfCheck, '~/run_self_check', self._on_run_self_check, callback_group=self_check)
        period = self._param('diagnostics_period')
        if period <= 0:
            raise ValueError(f'parameter diagnostics_period must be > 0, got {period}')
        self.create_timer(period, self._publish_diagnostics, callback_group=services)

        self._worker = threading.Thread(target=self._process_frames, name='emotion_worker', daemon=True)
        self._worker.start()
        self.get_logger().info(
            f'serving model {self._pipeline.classifier.name!r} on {self._pipeline.classifier.device}; '
            f'inputs: {", ".join(self._input_topics) or "none"}')

    # -- parameters -----------------------------------------------------------------

    def _param(self, name: str):
        return self.get_parameter(name).value

    def _pipeline_settings(self) -> PipelineSettings:
        settings = PipelineSettings(
            max_faces=self._param('max_faces'),
            min_detection_confidence=self._param('min_detection_confidence'),
            video_mode=self._param('video_mode'),
            track_iou_threshold=self._param('track_iou_threshold'),
            track_max_age_s=self._param('track_max_age'),
            smoothing=self._param('smoothing'),
            seen_crops=self._param('seen_crops'),
            landmark_backend=self._param('landmark_backend'),
            landmark_device=str(resolve_device(self._param('device'))))
        settings.validate()
        if self._param('self_check_samples') < 1:
            raise ValueError('parameter self_check_samples must be >= 1')
        if self._param('annotated_max_rate') < 0:
            raise ValueError('parameter annotated_max_rate must be >= 0')
        return settings

    def _subscribe_inputs(self) -> None:
        reliability = ReliabilityPolicy.RELIABLE if self._param('reliable') else ReliabilityPolicy.BEST_EFFORT
        # Depth 1: DDS keeps only the newest frame; FrameSlots does the same above it.
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=reliability)
        inputs = [(message_type, topic, self.resolve_topic_name(topic))
                  for message_type, parameter in ((Image, 'image_topics'), (CompressedImage, 'compressed_image_topics'))
                  for topic in self._param(parameter) if topic]
        if not inputs:
            raise ValueError('no input topic: set image_topics and/or compressed_image_topics')
        self._input_topics = [resolved for _, _, resolved in inputs]
        # Ready before subscribed: a publisher that waits for us loses no frame to start-up.
        self._pipeline.open_streams(self._input_topics)
        frames = MutuallyExclusiveCallbackGroup()
        for message_type, topic, resolved in inputs:
            self.create_subscription(message_type, topic, lambda m, t=resolved: self._slots.put(t, m),
                                     qos, callback_group=frames)

    # -- models ---------------------------------------------------------------------

    def _load_classifier(self, name: str) -> ExpressionClassifier:
        """Resolve, load and warm up a model; ModelNameError or ModelLoadError on failure."""
        classifier = ExpressionClassifier(self._store.resolve(name), device=self._device)
        try:
            classifier.warm_up()
        except RuntimeError as error:
            raise ModelLoadError(f'model {name!r} loads but cannot run: {error}') from error
        return classifier

    def _on_switch_model(self, request, response):
        response.available_models = self._store.available()
        with self._switch_lock:
            if request.model:
                try:
                    classifier = self._load_classifier(request.model)
                except (ModelNameError, ModelLoadError) as error:
                    response.success = False
                    response.message = f'model {request.model!r} refused, still serving ' \
                                       f'{self._pipeline.classifier.name!r}: {error}'
                    self.get_logger().warning(response.message)
                else:
                    previous = self._pipeline.swap_classifier(classifier)
                    response.success = True
                    response.message = f'switched from {previous.name!r} to {classifier.name!r}'
                    self.get_logger().info(response.message)
            else:
                response.success = True
                response.message = f'{len(response.available_models)} models available'
            response.active_model = self._pipeline.classifier.name
        return response

    # -- self-check -----------------------------------------------------------------

    def _on_run_self_check(self, request, response):
        attacks = list(request.attacks) or list(ATTACKS)
        epsilons = [float(e) for e in request.epsilons] or [1.0, 2.0, 4.0, 8.0]
        samples = request.samples or self._param('self_check_samples')
        source = request.source or 'seen'
        try:
            report = run_self_check(self._pipeline.classifier, source, attacks, epsilons, samples,
                                    seen_faces=self._pipeline.seen_faces)
        except SelfCheckError as error:
            response.success = False
            response.message = str(error)
            self.get_logger().warning(f'self-check refused: {error}')
            return response
        report_path = self._report_dir() / f'self_check_{time.strftime("%Y%m%d_%H%M%S")}_{os.getpid()}.json'
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_json = json.dumps(report.as_dict(), indent=2)
        report_path.write_text(report_json)
        response.success = True
        response.message = '; '.join(report.warnings) or 'ok'
        response.results = [SelfCheckResult(attack=row.attack, epsilon=row.epsilon,
                                            clean_accuracy=row.clean_accuracy,
                                            attacked_accuracy=row.attacked_accuracy, flip_rate=row.flip_rate)
                            for row in report.rows]
        response.summary = report.summary
        response.report_json = report_json
        response.report_path = str(report_path)
        self.get_logger().info(f'self-check: {report.summary} ({report_path})')
        for warning in report.warnings:
            self.get_logger().warning(warning)
        return response

    def _report_dir(self) -> Path:
        configured = self._param('report_dir')
        if configured:
            return Path(configured).expanduser()
        return Path(os.environ.get('ROS_HOME', Path.home() / '.ros')).expanduser() / 'fer_ros'

    # -- frames ---------------------------------------------------------------------

    def _process_frames(self) -> None:
        while self.context.ok() and not self._slots.closed:
            item = self._slots.take(timeout=0.2)
            if item is None:
                continue
            topic, message = item
            try:
                image = message_to_bgr(message)
                faces = self._pipeline.process(image, stream=topic)
            except ImageDecodeError as error:
                self._count_bad_frame(topic, error)
                continue
            except Exception as error:  # a node never dies on one bad frame
                self._count_bad_frame(topic, error)
                self.get_logger().error(f'unexpected error on a frame from {topic}: {error!r}')
                continue
            self._publish(message.header, faces, image)

    def _count_bad_frame(self, topic: str, error: Exception) -> None:
        with self._stats_lock:
            self._bad_frames += 1
            self._last_error = f'{topic}: {error}'
        self.get_logger().warning(f'dropped a frame from {topic}: {error}', throttle_duration_sec=2.0)

    def _publish(self, header, faces: list[FaceEmotion], image: np.ndarray) -> None:
        messages = [self._face_message(header, face) for face in faces]
        self._emotion_publisher.publish(EmotionArray(header=header, emotions=messages))
        if self._face_publisher is not None:
            for message in messages:
                self._face_publisher.publish(message)
        now = self.get_clock().now()
        latency = (now.nanoseconds - rclpy.time.Time.from_msg(header.stamp).nanoseconds) * 1e-9
        with self._stats_lock:
            self._processed += 1
            self._last_faces = len(faces)
            self._latencies.append(latency)
            self._processed_times.append(time.monotonic())
        if self._annotated_publisher is not None and time.monotonic() - self._last_annotated >= self._annotated_period:
            self._last_annotated = time.monotonic()
            self._annotated_publisher.publish(bgr_to_image_message(annotate_faces(image, faces), header))

    @staticmethod
    def _face_message(header, face: FaceEmotion) -> EmotionStamped:
        message = EmotionStamped(header=header, face_id=face.face_id, label=face.label,
                                 confidence=face.confidence, labels=list(face.labels),
                                 probabilities=face.probabilities.tolist(),
                                 valence=face.valence, arousal=face.arousal, model=face.model)
        message.roi.x_offset, message.roi.y_offset, message.roi.width, message.roi.height = face.box
        return message

    # -- diagnostics ----------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        with self._stats_lock:
            latencies = np.array(self._latencies) if self._latencies else np.zeros(1)
            times = list(self._processed_times)
            values = {
                'frames received': self._slots.received,
                'frames processed': self._processed,
                'frames skipped (newer frame arrived)': self._slots.skipped,
                'frames dropped (bad input or error)': self._bad_frames,
                'faces in last frame': self._last_faces,
                'last error': self._last_error,
            }
        window = times[-1] - times[0] if len(times) > 1 else 0.0
        values['processing rate (Hz)'] = f'{(len(times) - 1) / window:.2f}' if window > 0 else '0.00'
        values['latency median (s)'] = f'{np.median(latencies):.4f}'
        values['latency p95 (s)'] = f'{np.percentile(latencies, 95):.4f}'
        values['model'] = self._pipeline.classifier.name
        values['device'] = str(self._pipeline.classifier.device)
        values['inputs'] = ', '.join(self._input_topics)
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if self._bad_frames else DiagnosticStatus.OK,
            name=f'{self.get_name()}: emotion pipeline', hardware_id='fer_ros',
            message='dropping bad frames' if self._bad_frames else 'running',
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_publisher.publish(array)

    @property
    def input_topics(self) -> list[str]:
        """Resolved names of the image topics this node reads."""
        return list(self._input_topics)

    def stats(self) -> dict:
        """Counters for tests and benchmarks."""
        with self._stats_lock:
            return {'received': self._slots.received, 'processed': self._processed,
                    'skipped': self._slots.skipped, 'bad': self._bad_frames}

    def destroy_node(self):
        self._slots.close()
        self._worker.join(timeout=5.0)
        self._pipeline.close()
        return super().destroy_node()


def main(args=None):
    rclpy.init(args=args)
    node = None
    try:
        node = EmotionNode()
        executor = MultiThreadedExecutor(num_threads=3)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, ModelNameError, ModelLoadError) as error:
        rclpy.logging.get_logger('emotion_node').fatal(f'cannot start: {error}')
        return 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
