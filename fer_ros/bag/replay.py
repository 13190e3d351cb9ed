"""Run the emotion pipeline over a bag: offline (pipeline code, no DDS) or live (a real node over topics).

Both give one :class:`FrameResult` per input frame, so every frame is
accounted for: ``face`` (at least one face classified), ``no_face`` (an empty
result), ``skipped`` (live only: the node took a newer frame instead),
``lost`` (live only: sent while the node was down, from a crash until a
restarted node answered) or ``bad`` (the image could not be decoded; the
node drops such frames too).
"""

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fer_ros.bag.io import COMPRESSED_IMAGE, EMOTION_ARRAY, BagError, BagReader, BagWriter, stamp_ns
from fer_ros.model.inference import ExpressionClassifier
from fer_ros.pipeline import EmotionPipeline, FaceEmotion, PipelineSettings, largest_face
from fer_ros.resources import share_file
from fer_ros.run import spin_until_quiet, stop

STATUSES = ('face', 'no_face', 'skipped', 'lost', 'bad')
OUTPUT_TOPIC = '/emotion'


@dataclass
class FrameResult:
    index: int
    stamp_ns: int
    status: str
    faces: list[FaceEmotion] = field(default_factory=list)
    latency_s: float | None = None  # live: frame sent -> result received; offline: processing time
    error: str = ''

    @property
    def primary(self) -> FaceEmotion | None:
        """The largest face: the one scored against the frame's label."""
        return largest_face(self.faces)


@dataclass
class ReplayRun:
    mode: str
    topic: str
    model: str
    frames: list[FrameResult]
    wall_seconds: float
    details: dict = field(default_factory=dict)


def run_offline(bag, topic: str, classifier: ExpressionClassifier, settings: PipelineSettings) -> ReplayRun:
    """Every frame of the topic through EmotionPipeline in this process, in bag order."""
    pipeline = EmotionPipeline(classifier, settings)
    results = []
    start = time.perf_counter()
    try:
        with BagReader(bag) as reader:
            for frame in reader.frames(topic):
                if frame.image is None:
                    results.append(FrameResult(frame.index, frame.stamp_ns, 'bad', error=frame.error))
                    continue
                begin = time.perf_counter()
                faces = pipeline.process(frame.image, stream=topic, now=frame.stamp_ns * 1e-9)
                elapsed = time.perf_counter() - begin
                results.append(FrameResult(frame.index, frame.stamp_ns, 'face' if faces else 'no_face', faces,
                                           elapsed))
    finally:
        pipeline.close()
    if not results:
        raise BagError(f'topic {topic!r} of {bag} has no messages')
    return ReplayRun('offline', topic, classifier.name, results, time.perf_counter() - start)


def faces_of_emotion_array(message) -> list[FaceEmotion]:
    return [FaceEmotion(e.face_id, (int(e.roi.x_offset), int(e.roi.y_offset), int(e.roi.width), int(e.roi.height)),
                        tuple(e.labels), np.asarray(e.probabilities, np.float32), float(e.valence), float(e.arousal),
                        e.model) for e in message.emotions]


def run_live(bag, topic: str, output_bag, *, node_params: list[str], rate: float = 1.0, respawn: bool = False,
             drain_s: float = 3.0, startup_timeout_s: float = 120.0,
             before_frame: Callable[[int, int], None] | None = None) -> ReplayRun:
    """Replay the topic into an emotion node in its own process, record /emotion into output_bag, score it.

    ``rate`` multiplies the recorded rate. ``node_params`` are extra
    ``name:=value`` parameters for the node (model, model_dir, video_mode...).
    If the node dies during the replay, the replay goes on like a camera would:
    frames sent from then until a node answers again are ``lost``; with
    ``respawn`` a new node is started at once (like launch's respawn), and
    ``details['crashes']`` says when each crash happened and how soon the new
    node answered. ``before_frame(index, node_pid)`` runs before each frame is
    sent (the reliability benchmark and the tests kill the node with it).
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image

    from fer_ros.msg import EmotionArray

    if rate <= 0:
        raise ValueError(f'rate must be > 0, got {rate}')
    with BagReader(bag) as reader:
        frames = list(reader.frames(topic))
    if not frames:
        raise BagError(f'topic {topic!r} of {bag} has no messages')
    compressed = frames[0].msgtype == COMPRESSED_IMAGE
    input_params = ([f'compressed_image_topics:=[{topic}]', "image_topics:=['']"] if compressed
                    else [f'image_topics:=[{topic}]', "compressed_image_topics:=['']"])
    command = [sys.executable, '-m', 'fer_ros.nodes.emotion_node', '--ros-args',
               '--params-file', str(share_file('config/emotion.yaml')), '-r', f'emotion:={OUTPUT_TOPIC}']
    # The replay publishes reliably: a reliable subscription gets every frame or counts it as skipped.
    for param in ['reliable:=true', *input_params, *node_params]:
        command += ['-p', param]
    processes = [subprocess.Popen(command)]

    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    received: list[tuple[int, bytes]] = []  # (wall-clock ns, CDR)
    sent_ns: dict[int, int] = {}  # header stamp -> wall-clock ns when sent
    crashes: list[dict] = []
    down_since_ns = None  # wall-clock ns of the last crash, until a result arrives after it
    lost_stamps: set[int] = set()
    start = time.perf_counter()
    try:
        node = rclpy.create_node('fer_bag_replay', context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        publisher = node.create_publisher(CompressedImage if compressed else Image, topic, qos)
        node.create_subscription(EmotionArray, OUTPUT_TOPIC, lambda raw: received.append((time.time_ns(), raw)),
                                 QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE), raw=True)
        deadline = time.monotonic() + startup_timeout_s
        while publisher.get_subscription_count() == 0 or node.count_publishers(OUTPUT_TOPIC) == 0:
            if processes[-1].poll() is not None:
                raise BagError(f'the emotion node exited with code {processes[-1].returncode} before replay')
            if time.monotonic() > deadline:
                raise BagError('the emotion node did not subscribe in time')
            executor.spin_once(timeout_sec=0.1)
        replay_start, first_bag_time = time.monotonic(), frames[0].bag_time_ns
        for frame in frames:
            due = replay_start + (frame.bag_time_ns - first_bag_time) * 1e-9 / rate
            while (remaining := due - time.monotonic()) > 0:
                executor.spin_once(timeout_sec=remaining)
            if before_frame is not None:
                before_frame(frame.index, processes[-1].pid)
            if down_since_ns is None and processes[-1].poll() is not None:
                down_since_ns = time.time_ns()
                crashes.append({'frame': frame.index, 'exit_code': processes[-1].returncode,
                                'respawned': respawn, 'answered_after_s': None})
                if respawn:
                    processes.append(subprocess.Popen(command))
            if down_since_ns is not None and received and received[-1][0] > down_since_ns:
                crashes[-1]['answered_after_s'] = (received[-1][0] - down_since_ns) * 1e-9
                down_since_ns = None
            sent_ns[frame.stamp_ns] = time.time_ns()
            if down_since_ns is not None:
                lost_stamps.add(frame.stamp_ns)
            publisher.publish(frame.raw)
            executor.spin_once(timeout_sec=0)
        spin_until_quiet(executor, lambda: len(received), drain_s)
        if down_since_ns is not None and received and received[-1][0] > down_since_ns:
            crashes[-1]['answered_after_s'] = (received[-1][0] - down_since_ns) * 1e-9
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
        stop(processes)
    # Throughput over the replay itself: first frame sent to last result received.
    wall = (received[-1][0] - min(sent_ns.values())) * 1e-9 if received else time.perf_counter() - start

    with BagWriter(output_bag) as writer:
        for received_ns, raw in received:
            writer.write_raw(OUTPUT_TOPIC, EMOTION_ARRAY, received_ns, raw)
    results = score_recording(frames, output_bag, sent_ns, lost_stamps)
    return ReplayRun('live', topic, _model_param(node_params), results, wall,
                     {'rate': rate, 'output_bag': str(output_bag), 'messages_recorded': len(received),
                      'crashes': crashes})


def score_recording(frames, output_bag, sent_ns: dict[int, int] | None = None,
                    lost_stamps: set[int] = frozenset()) -> list[FrameResult]:
    """FrameResults of input frames, matched by header stamp to the EmotionArrays in output_bag.

    With ``sent_ns`` (stamp -> wall-clock ns the frame was sent), latency is the
    output's bag time (its arrival) minus that. An unanswered frame whose stamp
    is in ``lost_stamps`` (sent while the node was down) is ``lost``.
    """
    by_stamp = {}
    with BagReader(output_bag) as reader:
        for bag_time, message, _ in reader.messages(OUTPUT_TOPIC, (EMOTION_ARRAY,)):
            by_stamp[stamp_ns(message.header)] = (bag_time, message)
    results = []
    for frame in frames:
        if frame.image is None:
            results.append(FrameResult(frame.index, frame.stamp_ns, 'bad', error=frame.error))
        elif frame.stamp_ns not in by_stamp:
            results.append(FrameResult(frame.index, frame.stamp_ns,
                                       'lost' if frame.stamp_ns in lost_stamps else 'skipped'))
        else:
            bag_time, message = by_stamp[frame.stamp_ns]
            latency = (bag_time - sent_ns[frame.stamp_ns]) * 1e-9 if sent_ns and frame.stamp_ns in sent_ns else None
            faces = faces_of_emotion_array(message)
            results.append(FrameResult(frame.index, frame.stamp_ns, 'face' if faces else 'no_face', faces, latency))
    return results


def _model_param(node_params: list[str]) -> str:
    for param in node_params:
        if param.startswith('model:='):
            return param.split(':=', 1)[1]
    from fer_ros.nodes.emotion_node import DEFAULT_MODEL
    return DEFAULT_MODEL
