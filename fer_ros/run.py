"""fer-run: start the fer_ros nodes from a params file, without ros2 launch.

ROS 2 from pip wheels has no launch system; this starts the same nodes with
the same YAML as launch/emotion.launch.py, each in its own process:

  fer-run --source video.mp4 --echo     # whole pipeline on a video, ends with it
  fer-run --image-topic /camera/image_raw
  fer-run --source video.mp4 --web      # live web view on http://127.0.0.1:8080/, until Ctrl-C

With --source, the camera_source starts once the emotion node subscribes, and
everything stops when the source is exhausted and the emotion node has been
quiet for --drain seconds. With --web, a web_view node serves the live page,
a file or folder source plays again and again, and fer-run runs until Ctrl-C.
Every process gets the Fast DDS profile config/fastdds_large_images.xml
(camera frames through shared memory) unless FASTDDS_DEFAULT_PROFILES_FILE is
set (empty: Fast DDS's defaults).
"""

import argparse
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from fer_ros.dds_profile import use_large_image_profile
from fer_ros.msg import EmotionArray
from fer_ros.resources import share_file

STARTUP_TIMEOUT_S = 120.0
DRAIN_LIMIT_S = 60.0
DIAGNOSTICS_WAIT_S = 1.2  # a little over the default diagnostics_period
RESULTS_TOPIC = '/emotion'
# The emotion node's frame counters in its /diagnostics status, as fer-run reports them.
FRAME_COUNTERS = {'frames received': 'received', 'frames processed': 'answered',
                  'frames skipped (newer frame arrived)': 'skipped (a newer frame came first)',
                  'frames dropped (bad input or error)': 'dropped (bad input)'}


def default_params_file() -> Path:
    """config/emotion.yaml of the installed package (ament index or pip prefix), else of the source tree."""
    return share_file('config/emotion.yaml')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog='fer-run', description=__doc__.split('\n\n')[0])
    parser.add_argument('--params-file', type=Path, default=None, help='ROS 2 params file (default: config/emotion.yaml)')
    parser.add_argument('--source', help='video file, image folder or camera index for a camera_source node')
    parser.add_argument('--image-topic', default='image_raw', help='camera topic the emotion node reads')
    parser.add_argument('--model', help='model name (overrides the params file)')
    parser.add_argument('--device', choices=('auto', 'cpu', 'cuda'), help='inference device')
    parser.add_argument('--publish-annotated', action='store_true', help='publish emotion/image_annotated')
    parser.add_argument('--echo', action='store_true', help='print every EmotionArray published on emotion')
    parser.add_argument('--drain', type=float, default=3.0,
                        help='after the source ends, stop once no result has come for this many seconds')
    parser.add_argument('-p', '--param', action='append', default=[], metavar='NAME:=VALUE',
                        help='extra emotion_node parameter (repeatable)')
    web = parser.add_argument_group('live web view (web_view node)')
    web.add_argument('--web', action='store_true',
                     help='serve the live web view (turns publish_annotated on; the source loops; runs until Ctrl-C)')
    web.add_argument('--web-port', type=int, help='port of the page (default: the params file\'s, 8080)')
    web.add_argument('--allow-control', action='store_true',
                     help='let the page switch models and run self-checks (anyone who can reach the port could)')
    web.add_argument('--foxglove', action='store_true', help='also serve the live Foxglove WebSocket server')
    web.add_argument('--web-param', action='append', default=[], metavar='NAME:=VALUE',
                     help='extra web_view parameter (repeatable), e.g. host:=0.0.0.0 or foxglove_port:=8766')
    args = parser.parse_args(argv)
    if not args.web and (args.web_port is not None or args.allow_control or args.foxglove or args.web_param):
        parser.error('--web-port, --allow-control, --foxglove and --web-param need --web')
    return args


def web_view_params(args) -> list[str]:
    """The web_view parameters fer-run's options ask for."""
    params = []
    if args.web_port is not None:
        params.append(f'port:={args.web_port}')
    if args.allow_control:
        params.append('allow_control:=true')
    if args.foxglove:
        params.append('foxglove:=true')
    return params + list(args.web_param)


def node_command(module: str, params_file: Path, params: list[str], remaps: list[str]) -> list[str]:
    command = [sys.executable, '-m', f'fer_ros.nodes.{module}', '--ros-args', '--params-file', str(params_file)]
    for param in params:
        command += ['-p', param]
    for remap in remaps:
        command += ['-r', remap]
    return command


SIGINT_RECEIVED = threading.Event()


def raise_keyboard_interrupt(_signum, _frame) -> None:
    """fer-run's SIGINT handler: Python's default (KeyboardInterrupt), remembering that it came."""
    SIGINT_RECEIVED.set()
    raise KeyboardInterrupt


class InterruptibleExecutor(SingleThreadedExecutor):
    """A SingleThreadedExecutor whose spin_once ends with KeyboardInterrupt on Ctrl-C wherever it lands.

    A KeyboardInterrupt raised while rclpy turns a received message into a Python object, in native
    code, comes out as a RuntimeError ('Unable to convert call argument ...'); after a SIGINT, that
    error is the interrupt.
    """

    def spin_once(self, timeout_sec=None) -> None:
        try:
            super().spin_once(timeout_sec)
        except RuntimeError:
            if SIGINT_RECEIVED.is_set():
                raise KeyboardInterrupt from None
            raise


def spin_until_quiet(executor, count, quiet_s: float, limit_s: float = DRAIN_LIMIT_S) -> None:
    """Spin until count() has not changed for quiet_s seconds, or for at most limit_s."""
    start = time.monotonic()
    last_count, quiet_since = count(), start
    while time.monotonic() - quiet_since < quiet_s and time.monotonic() - start < limit_s:
        executor.spin_once(timeout_sec=0.1)
        if count() != last_count:
            last_count, quiet_since = count(), time.monotonic()


class PipelineMonitor:
    """fer-run's own node: sees which nodes subscribe where, and counts the results."""

    def __init__(self):
        self._context = rclpy.Context()
        # Ctrl-C stays a KeyboardInterrupt here (main stops the nodes), instead of rclpy shutting this
        # context down under a spinning executor.
        rclpy.init(args=[], context=self._context, signal_handler_options=SignalHandlerOptions.NO)
        self._node = rclpy.create_node('fer_run', context=self._context)
        self._executor = InterruptibleExecutor(context=self._context)
        self._executor.add_node(self._node)
        self.results = 0
        self.node_counters: dict[str, str] = {}
        self._node.create_subscription(EmotionArray, RESULTS_TOPIC, self._count_result, 10)
        self._node.create_subscription(DiagnosticArray, '/diagnostics', self._read_counters, 10)

    def _count_result(self, _message) -> None:
        self.results += 1

    def _read_counters(self, message: DiagnosticArray) -> None:
        for status in message.status:
            if status.name.endswith('emotion_node: emotion pipeline'):
                self.node_counters = {FRAME_COUNTERS[v.key]: v.value for v in status.values if v.key in FRAME_COUNTERS}

    def frame_summary(self) -> str:
        """Where the frames went, by the emotion node's last diagnostics."""
        if not self.node_counters:
            return 'no diagnostics from emotion_node'
        return 'emotion_node frames: ' + ', '.join(f'{value} {key}' for key, value in self.node_counters.items())

    def _subscribed(self, topic: str, node_name: str) -> bool:
        return any(info.node_name == node_name for info in self._node.get_subscriptions_info_by_topic(topic))

    def wait_for_subscribers(self, subscribers: dict[str, str], processes: list[subprocess.Popen],
                             timeout: float) -> bool:
        """True once each topic has a subscription of its node; False if a process dies or timeout passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and all(p.poll() is None for p in processes):
            if all(self._subscribed(topic, node) for topic, node in subscribers.items()):
                return True
            self._executor.spin_once(timeout_sec=0.2)
        return False

    def wait_for_exit(self, process: subprocess.Popen) -> int:
        """Count results while process runs; its exit status."""
        while process.poll() is None:
            self._executor.spin_once(timeout_sec=0.1)
        return process.returncode

    def wait_until_quiet(self, quiet_s: float) -> None:
        spin_until_quiet(self._executor, lambda: self.results, quiet_s)

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._executor.spin_once(timeout_sec=0.1)

    def close(self) -> None:
        self._executor.shutdown()
        self._node.destroy_node()
        rclpy.try_shutdown(context=self._context)


def stop(processes: list[subprocess.Popen]) -> None:
    """SIGINT (a clean ROS shutdown) to each process still running; kill what has not ended 10 s later."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_source(args, params_file: Path, image_topic: str, remaps: list[str],
               processes: list[subprocess.Popen]) -> int:
    """Start the camera_source once the nodes listen, wait for it to end and the results to stop."""
    monitor = PipelineMonitor()
    try:
        subscribers = {image_topic: 'emotion_node'}
        if args.echo:
            subscribers[RESULTS_TOPIC] = 'emotion_echo'
        if args.web:  # /diagnostics is its last subscription, whatever its topic parameters say
            subscribers['/diagnostics'] = 'web_view'
        if not monitor.wait_for_subscribers(subscribers, processes, STARTUP_TIMEOUT_S):
            print('fer-run: the nodes did not come up', file=sys.stderr)
            return processes[0].poll() or 1
        source_params = [f'source:={args.source}', 'wait_for_subscriber:=true'] + (['loop:=true'] if args.web else [])
        source = subprocess.Popen(node_command('camera_source', params_file, source_params, remaps))
        processes.append(source)
        source_status = monitor.wait_for_exit(source)
        monitor.wait_until_quiet(args.drain)
        monitor.spin_for(DIAGNOSTICS_WAIT_S)  # the node's counters after its last frame
        print(f'fer-run: the source ended; {monitor.results} results on {RESULTS_TOPIC} '
              f'({monitor.frame_summary()})', file=sys.stderr)
        return source_status or (processes[0].poll() or 0)
    finally:
        monitor.close()


def main(argv=None) -> int:
    args = parse_args(argv)
    # SIGINT (Ctrl-C, or a supervisor's stop) ends fer-run and its nodes, even when a shell started it
    # in the background with SIGINT ignored.
    signal.signal(signal.SIGINT, raise_keyboard_interrupt)
    params_file = args.params_file or default_params_file()
    if not params_file.is_file():
        print(f'fer-run: params file {params_file} not found', file=sys.stderr)
        return 2
    if args.drain < 0:
        print(f'fer-run: --drain must be >= 0, got {args.drain}', file=sys.stderr)
        return 2
    image_topic = args.image_topic if args.image_topic.startswith('/') else '/' + args.image_topic
    overrides = list(args.param)
    if args.model:
        overrides.append(f'model:={args.model}')
    if args.device:
        overrides.append(f'device:={args.device}')
    if args.publish_annotated or args.web:
        overrides.append('publish_annotated:=true')
    if args.source is not None:  # our camera_source is reliable: every frame reaches the node or is counted
        overrides.insert(0, 'reliable:=true')
    remaps = [f'image_raw:={image_topic}']
    use_large_image_profile()  # camera frames through shared memory, in every process started here

    processes = [subprocess.Popen(node_command('emotion_node', params_file, overrides, remaps))]
    try:
        if args.echo:
            processes.append(subprocess.Popen(node_command('emotion_echo', params_file, [], [])))
        if args.web:
            processes.append(subprocess.Popen(node_command('web_view', params_file, web_view_params(args), [])))
        if args.source is None:
            return processes[0].wait()
        return run_source(args, params_file, image_topic, remaps, processes)
    except KeyboardInterrupt:
        return 130
    finally:
        stop(processes)


if __name__ == '__main__':
    raise SystemExit(main())
