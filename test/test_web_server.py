"""The web view's server without ROS: HTTP, the WebSocket protocol, control refusal, bad requests, traces.

The server runs for real (aiohttp on a loopback port, its own thread); a recording controller stands
in for the emotion node's services, which test_web_view.py calls for real.
"""

import asyncio
import base64
import concurrent.futures
import gc
import json
import logging
import re
import socket
import struct
import threading
import time

import aiohttp
import cv2
import numpy as np
import pytest

from fer_ros.web.protocol import MAX_REQUEST_BYTES, ProtocolError, parse_request, unpack_image
from fer_ros.web.server import MAX_WS_MESSAGE_BYTES, STATIC_DIR, WebViewServer
from fer_ros.web.traces import AffectTraces

MODELS = ['cnn_se_gcn_fer2013', 'efficientnet_b2_fer2013', 'pcnn_fer2013']


class RecordingController:
    """Answers like the emotion node's services would, and records what it was asked."""

    def __init__(self):
        self.calls = []
        self.active = MODELS[0]

    def _answer(self, value) -> concurrent.futures.Future:
        future = concurrent.futures.Future()
        future.set_result(value)
        return future

    def list_models(self):
        self.calls.append(('list_models',))
        return self._answer({'ok': True, 'message': '3 models available', 'active_model': self.active,
                             'available_models': MODELS})

    def switch_model(self, model):
        self.calls.append(('switch_model', model))
        if model not in MODELS:
            return self._answer({'ok': False, 'message': f'model {model!r} refused', 'active_model': self.active,
                                 'available_models': MODELS})
        self.active = model
        return self._answer({'ok': True, 'message': f'switched to {model!r}', 'active_model': model,
                             'available_models': MODELS})

    def self_check(self, samples, attacks, epsilons):
        self.calls.append(('self_check', samples, attacks, epsilons))
        failed = concurrent.futures.Future()
        failed.set_exception(RuntimeError('service /emotion_node/run_self_check is not available'))
        return failed


def result(sec: int, faces=1) -> dict:
    return {'stamp': {'sec': sec, 'nanosec': 5}, 'frame_id': 'camera', 'model': MODELS[0], 'faces': [
        {'face_id': f'face_{i}', 'label': 'happy', 'confidence': 0.7, 'labels': ['happy', 'sad'],
         'probabilities': [0.7, 0.3], 'valence': 0.35 + sec / 100, 'arousal': 0.1, 'box': [1, 2, 30, 40],
         'model': MODELS[0]} for i in range(faces)]}


@pytest.fixture
def controller():
    return RecordingController()


@pytest.fixture
def server(controller):
    server = WebViewServer(controller, port=0, info={'image_topic': '/emotion/image_annotated',
                                                     'emotion_topic': '/emotion'})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def control_server(controller):
    server = WebViewServer(controller, port=0, allow_control=True)
    server.start()
    yield server
    server.stop()


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


async def read_until(ws, predicate, limit=50) -> list:
    """JSON messages up to and including the first that matches."""
    seen = []
    for _ in range(limit):
        message = await ws.receive(timeout=10)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        seen.append(json.loads(message.data))
        if predicate(seen[-1]):
            return seen
    raise AssertionError(f'no matching message in {seen}')


def raw_http(port: int, request: bytes) -> tuple[int, str]:
    """(status code, whole answer) of one raw request."""
    with socket.create_connection(('127.0.0.1', port), timeout=10) as connection:
        connection.sendall(request)
        answer = connection.recv(4096).decode('latin-1')
    return int(answer.split()[1]), answer


def test_page_and_assets_come_from_the_package_with_no_outside_reference(server):
    async def fetch():
        async with aiohttp.ClientSession() as session:
            async with session.get(server.url) as page:
                html = await page.text()
                assert page.status == 200 and 'text/html' in page.content_type
                assert "default-src 'self'" in page.headers['Content-Security-Policy']
            references = re.findall(r'(?:src|href)="([^"]+)"', html)
            assert set(references) == {'/static/icon.svg', '/static/style.css', '/static/app.js'}
            for path in references:
                async with session.get(server.url.rstrip('/') + path) as asset:
                    assert asset.status == 200, path
            async with session.get(server.url + 'api/state') as state:
                return await state.json()
    state = run(fetch())
    assert state['allow_control'] is False and 'Control is off' in state['control_note']
    assert state['emotion'] is None and state['clients'] == 0
    for asset in STATIC_DIR.iterdir():  # no CDN, no external font or script: works without internet
        text = asset.read_text()
        assert not re.search(r'https?://(?!www\.w3\.org/2000/svg)', text), asset.name


def test_malformed_http_requests_get_errors_and_the_server_keeps_serving(server):
    host = b'Host: 127.0.0.1\r\n'
    assert raw_http(server.port, b'\x16\x03\x01 TLS hello to an HTTP port\r\n\r\n')[0] == 400
    assert raw_http(server.port, b'GARBAGE\r\n\r\n')[0] == 400
    assert raw_http(server.port, b'GET /ws HTTP/1.1\r\n' + host + b'\r\n')[0] == 400  # no upgrade
    assert raw_http(server.port, b'GET /no/such/page HTTP/1.1\r\n' + host + b'\r\n')[0] == 404
    assert raw_http(server.port, b'POST / HTTP/1.1\r\n' + host + b'Content-Length: 0\r\n\r\n')[0] == 405
    status, answer = raw_http(server.port, b'GET /static/../server.py HTTP/1.1\r\n' + host + b'\r\n')
    assert status in (403, 404) and 'WebViewServer' not in answer
    # Requests for another host name (DNS rebinding) are refused while we serve loopback.
    assert raw_http(server.port, b'GET / HTTP/1.1\r\nHost: attacker.example\r\n\r\n')[0] == 403
    assert raw_http(server.port, b'GET / HTTP/1.1\r\nHost: localhost:1\r\n\r\n')[0] == 200


def test_a_websocket_from_a_foreign_origin_is_refused(server):
    async def connect():
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(server.url + 'ws', origin='http://attacker.example')
            assert refused.value.status == 403
            async with session.ws_connect(server.url + 'ws', origin=server.url.rstrip('/')) as ws:
                return (await read_until(ws, lambda m: m['type'] == 'hello'))[-1]
    assert run(connect())['allow_control'] is False


async def gather(ws, wanted: set, limit=50) -> dict:
    """The last message of each wanted type (an image as (metadata, JPEG)), in whatever order they come."""
    seen = {}
    for _ in range(limit):
        message = await ws.receive(timeout=10)
        if message.type == aiohttp.WSMsgType.BINARY:
            seen['image'] = unpack_image(message.data)
        else:
            assert message.type == aiohttp.WSMsgType.TEXT, message
            seen[json.loads(message.data)['type']] = json.loads(message.data)
        if wanted <= set(seen):
            return seen
    raise AssertionError(f'only {sorted(seen)} of {sorted(wanted)} came')


def test_updates_reach_connected_pages_and_a_late_page_gets_the_state_so_far(server):
    jpeg = cv2.imencode('.jpg', np.full((24, 32, 3), 200, np.uint8))[1].tobytes()
    status = {'level': 'OK', 'message': 'running', 'values': [['model', MODELS[0]]]}

    def publish_from_another_thread():  # as the node's ROS callbacks do
        server.publish_emotion(result(100))
        server.publish_image({'stamp': {'sec': 100, 'nanosec': 5}, 'width': 32, 'height': 24}, jpeg)
        server.publish_status(status)

    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(server.url + 'ws') as first:
                greeting = await gather(first, {'hello', 'traces'})
                assert greeting['hello']['emotion_topic'] == '/emotion'
                assert greeting['hello']['circumplex']['happy'] == [0.8, 0.5]
                publisher = threading.Thread(target=publish_from_another_thread)
                publisher.start()
                publisher.join()
                live = await gather(first, {'emotion', 'image', 'status'})
                server.publish_emotion(result(101))
                newest = await gather(first, {'emotion'})
            async with session.ws_connect(server.url + 'ws') as late:
                return live, newest, await gather(late, {'hello', 'traces', 'status', 'emotion', 'image'})
    live, newest, late = run(scenario())
    assert live['emotion']['faces'][0]['box'] == [1, 2, 30, 40] and live['status']['values'] == status['values']
    assert live['image'] == ({'stamp': {'sec': 100, 'nanosec': 5}, 'width': 32, 'height': 24}, jpeg)
    assert newest['emotion']['stamp']['sec'] == 101
    assert [p[0] for p in late['traces']['faces']['face_0']] == pytest.approx([100.0, 101.0])
    assert late['emotion']['stamp']['sec'] == 101 and late['status']['message'] == 'running'
    assert late['image'][1] == jpeg


def test_result_updates_are_throttled_to_the_newest_and_the_traces_keep_every_result(controller):
    server = WebViewServer(controller, port=0, max_update_rate=4.0)
    server.start()
    try:
        async def scenario():
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(server.url + 'ws') as ws:
                    await read_until(ws, lambda m: m['type'] == 'traces')
                    for second in range(1, 41):  # 40 results in one burst
                        server.publish_emotion(result(second))
                    updates = await read_until(ws, lambda m: m['stamp']['sec'] == 40)
                async with session.get(server.url + 'api/state') as state:
                    return updates, await state.json()
        updates, state = run(scenario())
    finally:
        server.stop()
    assert len(updates) <= 3  # the first result at once, then the newest one a quarter second later
    assert state['emotion']['stamp']['sec'] == 40


def test_pages_that_vanish_mid_image_leave_no_error_behind_and_the_server_serves_on(server, caplog):
    """A browser closed while a large frame is on its way (a page offering compression, as Chromium
    does): no error is logged, not even one found only when the send task is collected."""
    frame = np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes()  # incompressible
    running = threading.Event()
    running.set()

    def publish_frames():  # as the node does at 30 Hz, faster
        while running.is_set():
            server.publish_image({'stamp': {'sec': 1, 'nanosec': 0}, 'width': 32, 'height': 24}, frame)
            time.sleep(0.002)

    publisher = threading.Thread(target=publish_frames)
    publisher.start()
    caplog.set_level(logging.ERROR)
    try:
        for _ in range(10):
            with socket.create_connection(('127.0.0.1', server.port), timeout=10) as page:
                key = base64.b64encode(np.random.bytes(16)).decode()
                page.sendall(f'GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n'
                             f'Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n'
                             'Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n'.encode())
                received = b''
                while len(received) < 300_000:  # the handshake answer and a frame or more
                    received += page.recv(65536)
                assert received.startswith(b'HTTP/1.1 101')
                # Reset, not a closing handshake: the way a killed browser goes.
                page.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    finally:
        running.clear()
        publisher.join()
    time.sleep(0.5)
    gc.collect()
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert not errors, errors

    async def fresh_page():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(server.url + 'ws') as ws:
                return await gather(ws, {'hello', 'image'})
    assert run(fresh_page())['image'][1] == frame


def test_malformed_websocket_messages_get_error_replies_and_the_connection_keeps_working(server, controller):
    bad = ['not json', '[1, 2]', '{"no": "type"}', '{"type": "reboot"}', '{"type": "list_models", "id": [1]}',
           '{"type": "switch_model"}', '{"type": "self_check", "samples": -1}', 'x' * (MAX_REQUEST_BYTES + 1)]

    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(server.url + 'ws') as ws:
                await read_until(ws, lambda m: m['type'] == 'traces')
                errors = []
                for text in bad:
                    await ws.send_str(text)
                    errors.append((await read_until(ws, lambda m: m['type'] == 'error'))[-1]['error'])
                await ws.send_bytes(b'\x00\x01')
                errors.append((await read_until(ws, lambda m: m['type'] == 'error'))[-1]['error'])
                await ws.send_str(json.dumps({'type': 'list_models', 'id': 7}))
                reply = (await read_until(ws, lambda m: m['type'] == 'reply'))[-1]
            # A message over the size limit closes that connection (1009); others are served as before.
            async with session.ws_connect(server.url + 'ws') as ws:
                await ws.send_str('x' * (MAX_WS_MESSAGE_BYTES + 1))
                closed = await ws.receive(timeout=10)
                while closed.type == aiohttp.WSMsgType.TEXT:  # the greeting sent before
                    closed = await ws.receive(timeout=10)
            async with session.ws_connect(server.url + 'ws') as ws:
                hello = (await read_until(ws, lambda m: m['type'] == 'hello'))[-1]
        return errors, reply, closed, hello
    errors, reply, closed, hello = run(scenario())
    assert all(error.startswith('bad request') for error in errors[:-1]), errors
    assert 'binary' in errors[-1]
    assert reply['id'] == 7 and reply['ok'] and reply['available_models'] == MODELS
    assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and closed.data == 1009
    assert hello['type'] == 'hello'
    assert controller.calls == [('list_models',)]


def test_control_is_refused_by_the_server_unless_allowed(server, controller):
    async def ask(url):
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url + 'ws') as ws:
                await ws.send_str(json.dumps({'type': 'switch_model', 'model': MODELS[2], 'id': 'a'}))
                switch = (await read_until(ws, lambda m: m['type'] in ('reply', 'error')))[-1]
                await ws.send_str(json.dumps({'type': 'self_check', 'samples': 2, 'id': 'b'}))
                check = (await read_until(ws, lambda m: m['type'] in ('reply', 'error')))[-1]
        return switch, check
    switch, check = run(ask(server.url))
    for answer, kind in ((switch, 'switch_model'), (check, 'self_check')):
        assert answer['type'] == 'error' and answer['request'] == kind
        assert 'refused' in answer['error'] and 'allow_control' in answer['error']
    assert controller.calls == []


def test_allowed_control_goes_to_the_node_and_every_page_learns_the_new_model(control_server, controller):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(control_server.url + 'ws') as watcher, \
                    session.ws_connect(control_server.url + 'ws') as ws:
                await read_until(watcher, lambda m: m['type'] == 'traces')
                await ws.send_str(json.dumps({'type': 'switch_model', 'model': MODELS[2], 'id': 1}))
                switch = (await read_until(ws, lambda m: m['type'] == 'reply'))[-1]
                models = (await read_until(watcher, lambda m: m['type'] == 'models'))[-1]
                await ws.send_str(json.dumps({'type': 'switch_model', 'model': 'no_such_model', 'id': 2}))
                refused = (await read_until(ws, lambda m: m['type'] == 'reply'))[-1]
                await ws.send_str(json.dumps({'type': 'self_check', 'samples': 2, 'attacks': ['fgsm'],
                                              'epsilons': [2, 4.5], 'id': 3}))
                failed = (await read_until(ws, lambda m: m['type'] == 'error'))[-1]
        return switch, models, refused, failed
    switch, models, refused, failed = run(scenario())
    assert switch['ok'] and switch['active_model'] == MODELS[2] and models['active_model'] == MODELS[2]
    assert not refused['ok'] and 'refused' in refused['message']
    assert failed['id'] == 3 and 'not available' in failed['error']
    assert controller.calls == [('switch_model', MODELS[2]), ('switch_model', 'no_such_model'),
                                ('self_check', 2, ['fgsm'], [2.0, 4.5])]


def test_a_taken_port_is_an_oserror(server, controller):
    with pytest.raises(OSError):
        WebViewServer(controller, port=server.port).start()


@pytest.mark.parametrize('text, problem', [
    ('{"type": "switch_model", "model": ""}', 'model'),
    ('{"type": "switch_model", "model": 5}', 'model'),
    ('{"type": "self_check", "samples": true}', 'samples'),
    ('{"type": "self_check", "samples": 1001}', 'samples'),
    ('{"type": "self_check", "epsilons": [0]}', 'epsilon'),
    ('{"type": "self_check", "epsilons": ["8"]}', 'epsilon'),
    ('{"type": "self_check", "attacks": "fgsm"}', 'attacks'),
    ('{"type": "self_check", "attacks": [""]}', 'attack'),
    ('{"type": "list_models", "id": true}', 'id'),
])
def test_requests_with_bad_fields_are_refused_naming_the_field(text, problem):
    with pytest.raises(ProtocolError, match=problem):
        parse_request(text)


def test_a_valid_self_check_request_keeps_its_fields():
    request = parse_request('{"type": "self_check", "id": "x", "samples": 4, "attacks": ["pgd"], "epsilons": [1, 8]}')
    assert request.is_control and request.id == 'x'
    assert request.args == {'samples': 4, 'attacks': ['pgd'], 'epsilons': [1.0, 8.0]}
    assert not parse_request('{"type": "list_models"}').is_control


def test_affect_traces_keep_the_last_window_per_face_and_restart_when_time_goes_back():
    traces = AffectTraces(window_s=30.0)
    for second in range(0, 50):
        faces = [{'face_id': 'a', 'valence': second / 100, 'arousal': 0.0}]
        if second < 10:
            faces.append({'face_id': 'b', 'valence': 0.0, 'arousal': 0.5})
        traces.add(1000.0 + second, faces)
    snapshot = traces.snapshot()
    assert set(snapshot) == {'a'}  # b was last seen 40 s before the newest frame
    assert [p[0] for p in snapshot['a']] == [1000.0 + s for s in range(19, 50)]
    assert snapshot['a'][-1] == (1049.0, 0.49, 0.0)
    traces.add(500.0, [{'face_id': 'c', 'valence': 0.1, 'arousal': 0.2}])  # a replay from its start
    assert traces.snapshot() == {'c': [(500.0, 0.1, 0.2)]}
