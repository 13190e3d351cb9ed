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

A managed (lifecycle) node: configure loads the model and the detectors,
activate subscribes and starts the worker, deactivate unsubscribes and stops
it (no work at all while inactive), cleanup frees the model. With
``autostart`` (the default) it configures and activates itself at start-up.
"""

import json
import os
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import rclpy
import rclpy.parameter
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import ParameterException
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from fer_ros.model.metadata import ModelLoadError
from fer_ros.model.serving import load_classifier
from fer_ros.model_store import SHIPPED_MODEL_DIR, ModelNameError, ModelStore
from fer_ros.msg import EmotionArray, EmotionStamped, SelfCheckResult
from fer_ros.nodes.entry import parameter_descriptor, run_node, spin_with_threads, unless_shut_down
from fer_ros.nodes.rep155 import Rep155Output, hri_msgs_available
from fer_ros.nodes.ros_image import bgr_to_image_message, message_to_bgr
from fer_ros.pipeline import EmotionPipeline, FaceEmotion, PipelineSettings
from fer_ros.srv import RunSelfCheck, SwitchModel
from fer_ros.vision.annotate import annotate_faces
from fer_ros.vision.image_codec import MAX_PIXELS, ImageDecodeError

DEFAULT_MODEL = 'cnn_se_gcn_fer2013'

# name: (default, description); every parameter of the node, documented in the README.
PARAMETERS = {
    'image_topics': (['image_raw'], 'sensor_msgs/Image topics to read (bgr8, rgb8, bgra8, rgba8, mono8, mono16)'),
    'compressed_image_topics': ([''], 'sensor_msgs/CompressedImage topics to read (jpeg, png); empty for none'),
    'reliable': (False, 'subscribe with reliable QoS; False (default): best effort like the sensor-data profile, '
                        'which both best-effort and reliable camera drivers reach'),
    'model': (DEFAULT_MODEL, 'model name, looked up in model_dir then in the shipped weights'),
    'model_dir': ('', 'user model directory searched before the shipped weights; empty for none'),
    'device': ('auto', 'inference device: auto, cpu or cuda'),
    'torch_threads': (1, 'inference threads of PyTorch, LiteRT and ONNX Runtime (0: one per core); 1 leaves '
                         'the other cores to image decoding, MediaPipe and the camera driver'),
    'torchscript': (True, 'classify with the TorchScript-traced model (same outputs within 1e-4, faster on CPU); '
                          'false: eager PyTorch'),
    'litert': (True, 'on CPU, serve face-mesh models (the default model) without PyTorch: the face mesh graph '
                     'on LiteRT, the trained head on ONNX Runtime (exported once per weights file to '
                     '$ROS_HOME/fer_ros/compiled, logits checked against PyTorch within 1e-4): a third of the '
                     'memory; false: PyTorch'),
    'max_faces': (4, 'most faces per frame, 1 to 32'),
    'min_detection_confidence': (0.5, 'MediaPipe face detection threshold, 0 to 1'),
    'video_mode': (True, 'let MediaPipe track landmarks between frames of a stream (False: every frame alone)'),
    'landmark_backend': ('mediapipe', 'face detection + mesh: mediapipe (CPU) or torch (same models in PyTorch, '
                                      'on the inference device)'),
    'track_iou_threshold': (0.3, 'least box IoU for a face to keep its track id'),
    'track_max_age': (1.0, 'seconds a track survives without its face'),
    'smoothing': (1.0, 'per-track probability smoothing factor in (0, 1]; 1 disables smoothing'),
    'mirror_average': (False, "classify each face and its mirror image and average the two (the default model: "
                              'half a point more on FER-2013 PublicTest, twice the classifier time per face); '
                              'false: the face alone'),
    'publish_per_face': (True, 'also publish each face as EmotionStamped on emotion/faces'),
    'publish_annotated': (False, 'publish emotion/image_annotated with boxes, labels and confidence'),
    'annotated_max_rate': (5.0, 'most annotated images per second (0: every processed frame)'),
    'max_image_pixels': (MAX_PIXELS, 'largest frame accepted, width x height; larger frames (or compressed ones '
                                      'whose header declares more) are refused before decoding'),
    'diagnostics_period': (1.0, 'seconds between /diagnostics messages'),
    'diagnostics_window': (10.0, 'seconds of recent frames the diagnostics level is judged on (a bad frame '
                                 'makes it WARN for this long, as do more than 10% of the frames skipped)'),
    'expected_rate': (0.0, 'frames per second the inputs should bring together; diagnostics WARN below 80% of '
                           'it (0: not checked)'),
    'seen_crops': (64, 'recent face crops kept for the self-check on seen faces'),
    'self_check_samples': (32, 'default number of samples for run_self_check'),
    'report_dir': ('', 'where self-check reports are written; empty: $ROS_HOME/fer_ros or ~/.ros/fer_ros'),
    'autostart': (True, 'configure and activate at start-up (False: wait, unconfigured, for a lifecycle manager)'),
    'publish_hri': (True, 'also publish the REP-155 (ROS4HRI) topics /humans/faces/tracked, /humans/faces/<id>/roi '
                          'and /humans/faces/<id>/expression when hri_msgs is installed'),
}

DEVICES = ('auto', 'cpu', 'cuda')
SUBSCRIPTION_DEPTH = 10
# Parameters that cannot change while the node runs (they shape subscriptions, devices, the model store).
READ_ONLY = frozenset({'image_topics', 'compressed_image_topics', 'reliable', 'model_dir', 'device',
                       'video_mode', 'landmark_backend', 'diagnostics_period', 'seen_crops', 'autostart',
                       'publish_hri', 'torchscript', 'litert'})
# name -> (low, high) ranges in the descriptors (ros2 param describe shows them).
RANGES = {'max_faces': (1, 32), 'min_detection_confidence': (0.0, 1.0), 'track_iou_threshold': (0.0, 1.0),
          'track_max_age': (0.0, 3600.0), 'smoothing': (0.0, 1.0), 'torch_threads': (0, 256),
          'annotated_max_rate': (0.0, 1000.0), 'max_image_pixels': (1, 1 << 30),
          'diagnostics_period': (0.0, 3600.0), 'diagnostics_window': (0.0, 3600.0), 'expected_rate': (0.0, 1000.0),
          'seen_crops': (0, 10000),
          'self_check_samples': (1, 10000)}


def validate_parameters(values: dict) -> None:
    """ValueError naming the first parameter whose value the node cannot use (beyond the ranges)."""
    if values['device'] not in DEVICES:
        raise ValueError(f'parameter device must be one of {DEVICES}, got {values["device"]!r}')
    if values['torch_threads'] < 0:
        raise ValueError('parameter torch_threads must be >= 0')
    if values['self_check_samples'] < 1:
        raise ValueError('parameter self_check_samples must be >= 1')
    if values['annotated_max_rate'] < 0:
        raise ValueError('parameter annotated_max_rate must be >= 0')
    if values['max_image_pixels'] < 1:
        raise ValueError('parameter max_image_pixels must be >= 1')
    if values['diagnostics_window'] <= 0:
        raise ValueError('parameter diagnostics_window must be > 0')
    if values['diagnostics_period'] <= 0:
        raise ValueError(f'parameter diagnostics_period must be > 0, got {values["diagnostics_period"]}')


RATE_TOLERANCE = 0.8  # inputs slower than this share of expected_rate make the status WARN
SKIP_TOLERANCE = 0.1  # more than this share of the received frames skipped (processing behind) makes it WARN


def landmark_device(device: str) -> str:
    """The torch landmark backend's device for the ``device`` parameter (auto: cuda when available)."""
    from fer_ros.model.inference import resolve_device  # PyTorch: only for that backend
    return str(resolve_device(device))


def pipeline_health(received: int, bad: int, window_s: float, expected_rate: float = 0.0,
                    skipped: int = 0) -> tuple[bytes, str]:
    """Diagnostic level and message from the frames received, dropped and skipped in the last ``window_s``
    seconds."""
    if received == 0:
        return DiagnosticStatus.WARN, f'no frames received in the last {window_s:g} s'
    if bad >= received:
        return DiagnosticStatus.ERROR, f'all {received} frames of the last {window_s:g} s were bad'
    if bad:
        return DiagnosticStatus.WARN, f'dropped {bad} bad frames in the last {window_s:g} s'
    if skipped > SKIP_TOLERANCE * received:
        return DiagnosticStatus.WARN, (f'skipped {skipped} of {received} frames in the last {window_s:g} s: '
                                       'processing falls behind the input (a faster model or fewer frames)')
    rate = received / window_s
    if expected_rate > 0 and rate < RATE_TOLERANCE * expected_rate:
        return DiagnosticStatus.WARN, f'frames arrive at {rate:.1f} Hz, expected {expected_rate:g} Hz'
    return DiagnosticStatus.OK, 'running'


def count_since(times: deque, cutoff: float) -> int:
    """Drop the times before ``cutoff`` from the left of a time-ordered deque; return how many remain."""
    while times and times[0] < cutoff:
        times.popleft()
    return len(times)


class FrameSlots:
    """The newest unprocessed frame (or a frame's faces) of each input topic; replaced ones count as skipped."""

    def __init__(self):
        self._frames: dict[str, tuple[object, float]] = {}
        self._condition = threading.Condition()
        self.received = 0
        self.received_times: deque[float] = deque(maxlen=100_000)
        self.skipped = 0
        self.skipped_times: deque[float] = deque(maxlen=100_000)
        self.closed = False

    def put(self, topic: str, message) -> None:
        now = time.monotonic()
        with self._condition:
            self.received += 1
            self.received_times.append(now)
            if topic in self._frames:
                self.skipped += 1
                self.skipped_times.append(now)
            self._frames[topic] = (message, now)
            self._condition.notify()

    def recent_counts(self, window_s: float) -> tuple[int, int]:
        """Frames received and skipped in the last ``window_s`` seconds; older times are dropped."""
        cutoff = time.monotonic() - window_s
        with self._condition:
            return count_since(self.received_times, cutoff), count_since(self.skipped_times, cutoff)

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
        """Wake and end the worker; frames still waiting are dropped (counted as skipped)."""
        with self._condition:
            self.closed = True
            self.skipped += len(self._frames)
            self._frames.clear()
            self._condition.notify_all()

    def reopen(self) -> None:
        with self._condition:
            self.closed = False


class EmotionNode(LifecycleNode):
    """Facial expression recognition on camera topics, as a managed (lifecycle) node."""

    def __init__(self, **kwargs):
        super().__init__('emotion_node', **kwargs)
        # What destroy_node releases, set before anything can fail.
        self._pipeline: EmotionPipeline | None = None
        self._switch_lock = threading.RLock()
        self._emotion_publisher = self._face_publisher = self._annotated_publisher = None
        self._subscriptions_in_use = []
        self._workers: list[threading.Thread] = []
        self._hri_output: Rep155Output | None = None
        # Two stages, one frame apart: the faces of the next frame are found while this one is classified.
        self._slots = FrameSlots()  # frames received, waiting for detection
        self._detected = FrameSlots()  # faces found, waiting for classification
        for name, (default, description) in PARAMETERS.items():
            try:
                self.declare_parameter(name, default, parameter_descriptor(description, name in READ_ONLY, RANGES.get(name)))
            except ParameterException as error:  # a value outside the descriptor's range
                raise ValueError(f'parameter {name}: {error}') from None
        validate_parameters(self._values())
        self._device = self._param('device')
        self._inputs = self._input_list()
        self._store = ModelStore([self._param('model_dir'), SHIPPED_MODEL_DIR])
        self._max_image_pixels = self._param('max_image_pixels')
        self._annotated_period = (1.0 / self._param('annotated_max_rate')
                                  if self._param('annotated_max_rate') > 0 else 0.0)
        self._state = 'unconfigured'
        self._configure_error: Exception | None = None
        self._last_annotated = 0.0
        self._stats_lock = threading.Lock()
        self._processed = 0
        self._bad_frames = 0
        self._bad_frame_times = deque()
        self._last_error = ''
        self._last_faces = 0
        self._latencies = deque(maxlen=300)
        self._processed_times = deque(maxlen=300)

        services = MutuallyExclusiveCallbackGroup()
        self_check = MutuallyExclusiveCallbackGroup()
        self.create_service(SwitchModel, '~/switch_model', self._on_switch_model, callback_group=services)
        self.create_service(RunSelfCheck, '~/run_self_check', self._on_run_self_check, callback_group=self_check)
        self._diagnostics_publisher = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_timer(self._param('diagnostics_period'), self._publish_diagnostics, callback_group=services)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)
        if self._param('autostart'):
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise self._configure_error or ModelLoadError('configure failed')
            self.trigger_activate()

    # -- lifecycle ------------------------------------------------------------------

    def on_configure(self, state) -> TransitionCallbackReturn:
        """Load the model and start the detectors (a failure leaves the node unconfigured, saying why)."""
        try:
            self._apply_torch_threads()
            pipeline = EmotionPipeline(self._load_classifier(self._param('model')), self._pipeline_settings())
            # Ready before subscribed: a publisher that waits for us loses no frame to start-up.
            pipeline.open_streams([resolved for _, _, resolved in self._inputs])
        except Exception as error:  # a bad model, parameter or detector start: stay unconfigured, say why
            self._configure_error = error
            self.get_logger().error(f'configure failed: {error}')
            return TransitionCallbackReturn.FAILURE
        self._pipeline = pipeline
        self._emotion_publisher = self.create_publisher(EmotionArray, 'emotion', 10)
        self._create_output_publishers()
        if self._param('publish_hri'):
            if hri_msgs_available():
                self._hri_output = Rep155Output(self, self._param('track_max_age'))
            else:
                self.get_logger().info('hri_msgs is not installed: the REP-155 topics (/humans/faces/...) are not '
                                       'published (install ROS4HRI hri_msgs for them, or set publish_hri: false)')
        self._state = 'inactive'
        self.get_logger().info(f'configured: model {pipeline.classifier.name!r} on {pipeline.classifier.device} '
                               f'({pipeline.classifier.runtime})')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        """Subscribe to the inputs and start processing."""
        reliability = ReliabilityPolicy.RELIABLE if self._param('reliable') else ReliabilityPolicy.BEST_EFFORT
        # A short DDS queue: the callback only moves a frame into FrameSlots (which keeps the newest and
        # counts the rest as skipped), so frames that queue while the executor waits are still counted.
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=SUBSCRIPTION_DEPTH, reliability=reliability)
        self._slots.reopen()
        self._detected.reopen()
        self._workers = [threading.Thread(target=self._detect_frames, name='emotion_detect', daemon=True),
                         threading.Thread(target=self._classify_frames, name='emotion_classify', daemon=True)]
        for worker in self._workers:
            worker.start()
        frames = MutuallyExclusiveCallbackGroup()
        self._subscriptions_in_use = [
            self.create_subscription(message_type, topic, lambda m, t=resolved: self._slots.put(t, m), qos,
                                     callback_group=frames)
            for message_type, topic, resolved in self._inputs]
        self._state = 'active'
        self.get_logger().info(f'active: serving {self._serving_name()!r} on {", ".join(self.input_topics)}')
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        """Unsubscribe and stop the worker: no frame is taken or processed while inactive."""
        self._stop_processing()
        self._state = 'inactive'
        self.get_logger().info('inactive: unsubscribed, processing stopped')
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        """Free the model, the detectors and the output publishers."""
        self._release()
        self._state = 'unconfigured'
        self.get_logger().info('cleaned up: model and detectors released')
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._stop_processing()
        self._release()
        self._state = 'finalized'
        return TransitionCallbackReturn.SUCCESS

    def _stop_processing(self) -> None:
        for subscription in self._subscriptions_in_use:
            self.destroy_subscription(subscription)
        self._subscriptions_in_use = []
        self._slots.close()
        self._detected.close()
        for worker in self._workers:
            worker.join(timeout=10.0)
        self._workers = []

    def _release(self) -> None:
        with self._switch_lock:
            if self._pipeline is not None:
                self._pipeline.close()
                self._pipeline = None
        for publisher in (self._emotion_publisher, self._face_publisher, self._annotated_publisher):
            if publisher is not None:
                self.destroy_publisher(publisher)
        self._emotion_publisher = self._face_publisher = self._annotated_publisher = None
        if self._hri_output is not None:
            self._hri_output.close()
            self._hri_output = None

    @property
    def lifecycle_state(self) -> str:
        """unconfigured, inactive, active or finalized."""
        return self._state

    @property
    def subscriptions_in_use(self) -> list:
        """The input subscriptions (only while active)."""
        return list(self._subscriptions_in_use)

    @property
    def publishes_hri(self) -> bool:
        """True while the REP-155 topics are published."""
        return self._hri_output is not None

    @property
    def worker_alive(self) -> bool:
        """True while both processing threads run (only while active)."""
        return bool(self._workers) and all(worker.is_alive() for worker in self._workers)

    @property
    def serving_model(self) -> str:
        """Name of the model in use ('' while unconfigured)."""
        return self._serving_name()

    # -- parameters -----------------------------------------------------------------

    def _param(self, name: str):
        return self.get_parameter(name).value

    def _values(self) -> dict:
        return {name: self._param(name) for name in PARAMETERS}

    def _pipeline_settings(self, values: dict | None = None) -> PipelineSettings:
        values = values or self._values()
        settings = PipelineSettings(
            max_faces=values['max_faces'],
            min_detection_confidence=values['min_detection_confidence'],
            video_mode=values['video_mode'],
            track_iou_threshold=values['track_iou_threshold'],
            track_max_age_s=values['track_max_age'],
            smoothing=values['smoothing'],
            seen_crops=values['seen_crops'],
            mirror_average=values['mirror_average'],
            landmark_backend=values['landmark_backend'],
            landmark_device=landmark_device(values['device']) if values['landmark_backend'] == 'torch' else 'cpu')
        settings.validate()
        return settings

    def _apply_torch_threads(self) -> None:
        """PyTorch's thread count, where PyTorch serves (a compiled model's threads are set when it loads)."""
        if self._param('torch_threads') and 'torch' in sys.modules:
            sys.modules['torch'].set_num_threads(self._param('torch_threads'))

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        """Validate a run-time change (read-only ones are refused by rclpy); a new model must load and run."""
        values = self._values()
        values.update({parameter.name: parameter.value for parameter in parameters})
        try:
            validate_parameters(values)
            self._pipeline_settings(values)
        except ValueError as error:
            return SetParametersResult(successful=False, reason=str(error))
        model = values['model']
        if self._pipeline is not None and model != self._pipeline.classifier.name:
            response = SwitchModel.Response()
            with self._switch_lock:
                self._switch_to(model, response, sync_parameter=False)
            if not response.success:
                return SetParametersResult(successful=False, reason=response.message)
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, parameters) -> None:
        """Apply accepted run-time changes from the next frame on."""
        names = {parameter.name for parameter in parameters}
        if self._pipeline is not None:
            self._pipeline.update_settings(self._pipeline_settings())
        self._max_image_pixels = self._param('max_image_pixels')
        self._annotated_period = (1.0 / self._param('annotated_max_rate')
                                  if self._param('annotated_max_rate') > 0 else 0.0)
        if 'torch_threads' in names:
            self._apply_torch_threads()
        if self._emotion_publisher is not None:
            self._create_output_publishers()
        changed = ', '.join(f'{p.name}={p.value!r}' for p in parameters)
        self.get_logger().info(f'parameters changed: {changed}')

    def _create_output_publishers(self) -> None:
        """The optional outputs switched on (publishers are created once and kept)."""
        if self._param('publish_per_face') and self._face_publisher is None:
            self._face_publisher = self.create_publisher(EmotionStamped, 'emotion/faces', 10)
        if self._param('publish_annotated') and self._annotated_publisher is None:
            self._annotated_publisher = self.create_publisher(Image, 'emotion/image_annotated', 2)

    def _input_list(self) -> list[tuple[type, str, str]]:
        """(message type, topic as given, resolved name) of every input; ValueError when there is none."""
        inputs = [(message_type, topic, self.resolve_topic_name(topic))
                  for message_type, parameter in ((Image, 'image_topics'), (CompressedImage, 'compressed_image_topics'))
                  for topic in self._param(parameter) if topic]
        if not inputs:
            raise ValueError('no input topic: set image_topics and/or compressed_image_topics')
        return inputs

    # -- models ---------------------------------------------------------------------

    def _load_classifier(self, name: str):
        """Resolve, load and warm up a model; ModelNameError or ModelLoadError on failure."""
        classifier, notes = load_classifier(self._store.resolve(name), device=self._device, name=name,
                                            torchscript=self._param('torchscript'), compiled=self._param('litert'),
                                            num_threads=self._param('torch_threads'))
        for note in notes:
            self.get_logger().warning(f'model {name!r} {note[:300]}')
        classifier.warm_up()
        return classifier

    def _on_switch_model(self, request, response):
        try:
            response.available_models = self._store.available()
            with self._switch_lock:
                if self._pipeline is None:
                    response.success = False
                    response.message = f'the node is {self._state}: configure it before switching models'
                elif request.model:
                    self._switch_to(request.model, response)
                else:
                    response.success = True
                    response.message = f'{len(response.available_models)} models available'
        except Exception as error:  # a node never dies on one request
            response.success = False
            response.message = f'switch_model failed: {error!r}'
            self.get_logger().error(response.message)
        response.active_model = self._serving_name()
        return response

    def _serving_name(self) -> str:
        pipeline = self._pipeline
        return pipeline.classifier.name if pipeline is not None else ''

    def _switch_to(self, name: str, response, sync_parameter: bool = True) -> None:
        """Load ``name`` beside the serving model; swap only when it loads and runs (and, with
        ``sync_parameter``, make the ``model`` parameter say so)."""
        try:
            classifier = self._load_classifier(name)
        except (ModelNameError, ModelLoadError) as error:
            refusal = error
        except Exception as error:  # anything else a hostile checkpoint can raise: still a refusal
            refusal = ModelLoadError(f'cannot load: {error!r}')
        else:
            previous = self._pipeline.swap_classifier(classifier)
            if sync_parameter:
                self.set_parameters([rclpy.parameter.Parameter('model', value=name)])
            response.success = True
            response.message = f'switched from {previous.name!r} to {classifier.name!r}'
            self.get_logger().info(response.message)
            return
        response.success = False
        response.message = f'model {name!r} refused, still serving {self._pipeline.classifier.name!r}: {refusal}'
        self.get_logger().warning(response.message)

    # -- self-check -----------------------------------------------------------------

    def _on_run_self_check(self, request, response):
        from fer_ros.robustness import ATTACKS, SelfCheckError, run_self_check  # PyTorch, loaded on first use
        attacks = list(request.attacks) or list(ATTACKS)
        epsilons = [float(e) for e in request.epsilons] or [1.0, 2.0, 4.0, 8.0]
        samples = request.samples or self._param('self_check_samples')
        source = request.source or 'seen'
        pipeline = self._pipeline
        if pipeline is None:
            response.success = False
            response.message = f'the node is {self._state}: configure it before a self-check'
            return response
        try:
            # The attacks need gradients: a compiled model lends its weights' PyTorch model.
            report = run_self_check(pipeline.classifier.for_gradients(), source, attacks, epsilons, samples,
                                    seen_faces=pipeline.seen_faces)
        except SelfCheckError as error:
            response.success = False
            response.message = str(error)
            self.get_logger().warning(f'self-check refused: {error}')
            return response
        except Exception as error:  # a node never dies on one request
            response.success = False
            response.message = f'self-check failed: {error!r}'
            self.get_logger().error(response.message)
            return response
        report_json = json.dumps(report.as_dict(), indent=2)
        report_path = self._report_dir() / f'self_check_{time.strftime("%Y%m%d_%H%M%S")}_{os.getpid()}.json'
        try:
            report_path.parent.mkdir(parents=True, exist_ok=True)
            report_path.write_text(report_json)
        except OSError as error:
            report.warnings.append(f'report not written to {report_path}: {error}')
            report_path = ''
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

    def _detect_frames(self) -> None:
        """Stage one: decode each frame and find and align its faces while stage two classifies the
        previous one; newer faces of a topic replace those still waiting for stage two (counted as skipped),
        so stage two always classifies the newest."""
        while self.context.ok() and not self._slots.closed:
            item = self._slots.take(timeout=0.2)
            if item is None:
                continue
            topic, message = item
            try:
                image = message_to_bgr(message, self._max_image_pixels)
                detected = self._pipeline.detect(image, stream=topic, now=self._message_time(message.header))
            except Exception as error:  # a node never dies on one bad frame
                self._drop_frame(topic, error)
                continue
            self._detected.put(topic, (message.header, image, detected))

    def _classify_frames(self) -> None:
        """Stage two: classify the faces stage one found and publish."""
        while self.context.ok() and not self._detected.closed:
            item = self._detected.take(timeout=0.2)
            if item is None:
                continue
            topic, (header, image, detected) = item
            try:
                faces = self._pipeline.classify(detected)
            except Exception as error:  # a node never dies on one bad frame
                self._drop_frame(topic, error)
                continue
            with unless_shut_down(self.context):
                self._publish(header, faces, image, detected.now)

    def _message_time(self, header) -> float:
        """Seconds of the frame's stamp (tracks age in message time: bag replays at any rate and
        use_sim_time agree), or of the node's clock for an unstamped frame."""
        stamp = header.stamp.sec + header.stamp.nanosec * 1e-9
        return stamp if stamp > 0 else self.get_clock().now().nanoseconds * 1e-9

    def _drop_frame(self, topic: str, error: Exception) -> None:
        with self._stats_lock:
            self._bad_frames += 1
            self._bad_frame_times.append(time.monotonic())
            self._last_error = f'{topic}: {str(error)[:300]}'
        if isinstance(error, ImageDecodeError):
            self.get_logger().warning(f'dropped a frame from {topic}: {error}', throttle_duration_sec=2.0)
        else:
            self.get_logger().error(f'dropped a frame from {topic} on an unexpected error: {error!r}',
                                    throttle_duration_sec=2.0)

    def _publish(self, header, faces: list[FaceEmotion], image: np.ndarray, now: float) -> None:
        messages = [self._face_message(header, face) for face in faces]
        self._emotion_publisher.publish(EmotionArray(header=header, emotions=messages))
        if self._hri_output is not None:
            self._hri_output.max_age_s = self._param('track_max_age')
            self._hri_output.publish(header, faces, image.shape[:2], now)
        if self._face_publisher is not None and self._param('publish_per_face'):
            for message in messages:
                self._face_publisher.publish(message)
        now = self.get_clock().now()
        latency = (now.nanoseconds - rclpy.time.Time.from_msg(header.stamp).nanoseconds) * 1e-9
        with self._stats_lock:
            self._processed += 1
            self._last_faces = len(faces)
            self._latencies.append(latency)
            self._processed_times.append(time.monotonic())
        if (self._annotated_publisher is not None and self._param('publish_annotated')
                and time.monotonic() - self._last_annotated >= self._annotated_period):
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
        with unless_shut_down(self.context):  # the timer fired as Ctrl-C came
            array = DiagnosticArray(status=[self._diagnostic_status()])
            array.header.stamp = self.get_clock().now().to_msg()
            self._diagnostics_publisher.publish(array)

    def _diagnostic_status(self) -> DiagnosticStatus:
        window_s = self._param('diagnostics_window')
        with self._stats_lock:
            recent_bad = count_since(self._bad_frame_times, time.monotonic() - window_s)
            recent_received, recent_skipped = self._slots.recent_counts(window_s)
            recent_skipped += self._detected.recent_counts(window_s)[1]
            latencies = np.array(self._latencies) if self._latencies else np.zeros(1)
            times = list(self._processed_times)
            values = {
                'frames received': self._slots.received,
                'frames processed': self._processed,
                'frames skipped (newer frame arrived)': self._slots.skipped + self._detected.skipped,
                'frames dropped (bad input or error)': self._bad_frames,
                f'frames dropped in the last {window_s:g} s': recent_bad,
                f'frames skipped in the last {window_s:g} s': recent_skipped,
                'faces in last frame': self._last_faces,
                'last error': self._last_error,
            }
        window = times[-1] - times[0] if len(times) > 1 else 0.0
        values['processing rate (Hz)'] = f'{(len(times) - 1) / window:.2f}' if window > 0 else '0.00'
        values['latency median (s)'] = f'{np.median(latencies):.4f}'
        values['latency p95 (s)'] = f'{np.percentile(latencies, 95):.4f}'
        pipeline = self._pipeline
        values['model'] = pipeline.classifier.name if pipeline is not None else ''
        values['device'] = str(pipeline.classifier.device) if pipeline is not None else ''
        values['runtime'] = pipeline.classifier.runtime if pipeline is not None else ''
        values['inputs'] = ', '.join(self.input_topics)
        values['lifecycle state'] = self._state
        values[f'input rate over the last {window_s:g} s (Hz)'] = f'{recent_received / window_s:.2f}'
        if self._state == 'active':
            level, message = pipeline_health(recent_received, recent_bad, window_s, self._param('expected_rate'),
                                             recent_skipped)
        else:  # not processing by request
            level, message = DiagnosticStatus.OK, self._state
        # Named after the node's full name, so namespaced instances do not collide (diagnostic_updater style).
        return DiagnosticStatus(level=level, name=f'{self.get_fully_qualified_name()}: emotion pipeline',
                                hardware_id='fer_ros', message=message,
                                values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])

    @property
    def input_topics(self) -> list[str]:
        """Resolved names of the image topics this node reads."""
        return [resolved for _, _, resolved in self._inputs]

    def stats(self) -> dict:
        """Counters for tests and benchmarks."""
        with self._stats_lock:
            return {'received': self._slots.received, 'processed': self._processed,
                    'skipped': self._slots.skipped + self._detected.skipped, 'bad': self._bad_frames}

    def destroy_node(self):
        self._stop_processing()
        self._release()
        return super().destroy_node()


def main(args=None):
    return run_node(EmotionNode, 'emotion_node', spin_with_threads(3), args)


if __name__ == '__main__':
    raise SystemExit(main())
