"""fer-run: start the fer_ros nodes from a params file, without ros2 launch.

ROS 2 from pip wheels has no launch system; this starts the same nodes with
the same YAML as launch/emotion.launch.py, each in its own process:

  fer-run --source video.mp4 --echo     # whole pipeline on a video, ends with it
  fer-run --image-topic /camera/image_raw

With --source, the camera_source starts once the emotion node subscribes, and
everything stops when the source is exhausted (after --drain seconds).
"""

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

import rclpy

from fer_ros.resources import share_file

STARTUP_TIMEOUT_S = 120.0


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
    parser.add_argument('--drain', type=float, default=3.0, help='seconds to wait after the source ends')
    parser.add_argument('-p', '--param', action='append', default=[], metavar='NAME:=VALUE',
                        help='extra emotion_node parameter (repeatable)')
    return parser.parse_args(argv)


def node_command(module: str, params_file: Path, params: list[str], remaps: list[str]) -> list[str]:
    command = [sys.executable, '-m', f'fer_ros.nodes.{module}', '--ros-args', '--params-file', str(params_file)]
    for param in params:
        command += ['-p', param]
    for remap in remaps:
        command += ['-r', remap]
    return command


def wait_for_subscribers(topics: list[str], processes: list[subprocess.Popen], timeout: float) -> bool:
    """True once every topic has a subscriber; False if a process dies or timeout passes."""
    rclpy.init(args=[])
    try:
        node = rclpy.create_node('fer_run_waiter')
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and all(p.poll() is None for p in processes):
            if all(node.count_subscribers(topic) > 0 for topic in topics):
                return True
            time.sleep(0.2)
        return False
    finally:
        rclpy.try_shutdown()


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


def main(argv=None) -> int:
    args = parse_args(argv)
    params_file = args.params_file or default_params_file()
    if not params_file.is_file():
        print(f'fer-run: params file {params_file} not found', file=sys.stderr)
        return 2
    image_topic = args.image_topic if args.image_topic.startswith('/') else '/' + args.image_topic
    overrides = list(args.param)
    if args.model:
        overrides.append(f'model:={args.model}')
    if args.device:
        overrides.append(f'device:={args.device}')
    if args.publish_annotated:
        overrides.append('publish_annotated:=true')
    remaps = [f'image_raw:={image_topic}']

    processes = [subprocess.Popen(node_command('emotion_node', params_file, overrides, remaps))]
    try:
        if args.echo:
            processes.append(subprocess.Popen(node_command('emotion_echo', params_file, [], [])))
        if args.source is None:
            return processes[0].wait()
        # Start the source only when every frame and every result has a reader.
        topics = [image_topic] + (['/emotion'] if args.echo else [])
        if not wait_for_subscribers(topics, processes, STARTUP_TIMEOUT_S):
            print('fer-run: the nodes did not come up', file=sys.stderr)
            return processes[0].poll() or 1
        source = subprocess.Popen(node_command('camera_source', params_file, [f'source:={args.source}'], remaps))
        processes.append(source)
        source_status = source.wait()
        time.sleep(args.drain)
        emotion_status = processes[0].poll()
        return source_status or (emotion_status or 0)
    except KeyboardInterrupt:
        return 130
    finally:
        stop(processes)


if __name__ == '__main__':
    raise SystemExit(main())
