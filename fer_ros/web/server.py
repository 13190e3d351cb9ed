"""The web view's HTTP and WebSocket server (aiohttp), run on its own thread and event loop.

The ROS node hands it plain data from any thread (:meth:`WebViewServer.publish_emotion`,
``publish_image``, ``publish_status``); the server keeps what a page joining later needs (the last
frame, result, status, the valence/arousal traces) and pushes updates to every connected page (the
newest result at most ``max_update_rate`` times a second). A page that reads slowly skips images (only the newest waits for it) and, after a backlog of
``EVENT_BACKLOG`` messages, old results; it never holds up the others or the node.

Control requests (switch_model, self_check) go to a :class:`Controller` and are refused here,
whatever the page shows, unless the server was started with ``allow_control``.
"""

import asyncio
import concurrent.futures
import ipaddress
import json
import logging
import threading
from collections import deque
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from fer_ros.affect import CIRCUMPLEX
from fer_ros.web.protocol import ProtocolError, Request, pack_image, parse_request
from fer_ros.web.traces import AffectTraces

STATIC_DIR = Path(__file__).resolve().parent / 'static'
EVENT_BACKLOG = 256
MAX_WS_MESSAGE_BYTES = 64 * 1024  # larger client messages close that connection (1009)
HEARTBEAT_S = 20.0
# Seconds a control request may wait for the emotion node's answer.
REQUEST_TIMEOUT_S = {'list_models': 30.0, 'switch_model': 120.0, 'self_check': 900.0}
LOOPBACK_NAMES = frozenset({'localhost', 'localhost.localdomain'})
# Pages use only their own origin: scripts, styles, the WebSocket, and blob: URLs for the frames.
SECURITY_HEADERS = {
    'Content-Security-Policy': "default-src 'self'; img-src 'self' blob:; connect-src 'self'; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'no-referrer',
    'Cache-Control': 'no-cache',
}


class Controller(Protocol):
    """What the server asks of the emotion node. Each call returns a future of a dict with ``ok``
    (bool) and ``message`` (str) and, per request, the service's answer."""

    def list_models(self) -> concurrent.futures.Future: ...

    def switch_model(self, model: str) -> concurrent.futures.Future: ...

    def self_check(self, samples: int, attacks: list[str], epsilons: list[float]) -> concurrent.futures.Future: ...


def control_note(allow_control: bool) -> str:
    """What the page says about the control actions."""
    if allow_control:
        return ('Control is on: anyone who can reach this port can switch the emotion node\'s model and run '
                'self-checks.')
    return ('Control is off: this server refuses model switches and self-checks. Start fer-web with '
            '-p allow_control:=true to allow them (anyone who can reach the port could then change the '
            'robot\'s model).')


def is_loopback(host: str) -> bool:
    """True for a loopback address or name (127.0.0.0/8, ::1, localhost)."""
    host = host.strip('[]').lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """The name part of a Host header (without the port)."""
    return urlsplit('//' + host_header).hostname or ''


class ClientChannel:
    """One connected page: a backlog of JSON messages and the newest image not yet sent."""

    def __init__(self, ws: web.WebSocketResponse):
        self.ws = ws
        self._events: deque[str] = deque(maxlen=EVENT_BACKLOG)
        self._image: bytes | None = None
        self._wake = asyncio.Event()

    def push_event(self, text: str) -> None:
        self._events.append(text)
        self._wake.set()

    def push_image(self, data: bytes) -> None:
        self._image = data
        self._wake.set()

    async def send_forever(self) -> None:
        """Send what is pushed, in order, until the connection closes."""
        try:
            while not self.ws.closed:
                await self._wake.wait()
                self._wake.clear()
                while self._events:
                    await self.ws.send_str(self._events.popleft())
                if self._image is not None:
                    image, self._image = self._image, None
                    await self.ws.send_bytes(image)
        except ConnectionError:  # the page went away between two messages
            pass


class WebViewServer:
    """Serves the page, its assets, ``/api/state`` and the ``/ws`` WebSocket on ``host:port``."""

    def __init__(self, controller: Controller, *, host: str = '127.0.0.1', port: int = 8080,
                 allow_control: bool = False, trace_seconds: float = 30.0, max_update_rate: float = 10.0,
                 info: dict | None = None, logger=None):
        self._controller = controller
        self._update_period = 1.0 / max_update_rate if max_update_rate > 0 else 0.0
        self._next_update = 0.0
        self._update_scheduled = False
        self.host = host
        self.port = port
        self.allow_control = allow_control
        self._info = dict(info or {})
        self._logger = logger or logging.getLogger(__name__)
        self._traces = AffectTraces(trace_seconds)
        self._clients: set[ClientChannel] = set()
        self._last_emotion: str | None = None
        self._last_status: str | None = None
        self._last_models: str | None = None
        self._last_image: bytes | None = None
        self._control_running: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # -- life cycle (any thread) ---------------------------------------------------------

    def start(self) -> None:
        """Bind and serve on a thread of its own; OSError when the address cannot be bound."""
        loop = asyncio.new_event_loop()
        started = concurrent.futures.Future()

        def serve():
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_site())
            except Exception as error:  # handed to start()'s caller
                started.set_exception(error)
                loop.close()
                return
            started.set_result(None)
            loop.run_forever()
            loop.run_until_complete(self._shut_down())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name='web_view_server', daemon=True)
        self._thread.start()
        started.result()

    def stop(self) -> None:
        """Close every connection and the listening socket; returns when the server thread has ended."""
        if self._thread is None or not self._thread.is_alive():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10.0)

    @property
    def has_clients(self) -> bool:
        """True while a page is connected."""
        return bool(self._clients)

    @property
    def url(self) -> str:
        host = f'[{self.host}]' if ':' in self.host else self.host
        return f'http://{host}:{self.port}/'

    # -- data from the node (any thread) ------------------------------------------------

    def publish_emotion(self, result: dict) -> None:
        """One frame's result: ``stamp`` {sec, nanosec}, ``frame_id``, ``model`` and ``faces`` (dicts with
        face_id, label, confidence, labels, probabilities, valence, arousal, box [x, y, w, h])."""
        self._call_in_loop(self._on_emotion, result)

    def publish_image(self, meta: dict, jpeg: bytes) -> None:
        """One camera frame, JPEG-encoded, with its ``stamp``, ``width`` and ``height``."""
        self._call_in_loop(self._on_image, pack_image(meta, jpeg))

    def publish_status(self, status: dict) -> None:
        """The emotion node's latest diagnostic status: ``level``, ``message``, ``values`` {key: value}."""
        self._call_in_loop(self._on_status, status)

    def _call_in_loop(self, function, argument) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(function, argument)
            except RuntimeError:  # the loop closed meanwhile: the server is stopping
                pass

    # -- in the event loop ---------------------------------------------------------------

    def _broadcast(self, text: str) -> None:
        for client in self._clients:
            client.push_event(text)

    def _on_emotion(self, result: dict) -> None:
        """Keep every result in the traces; send the pages the newest, at most max_update_rate times a second."""
        stamp = result['stamp']['sec'] + result['stamp']['nanosec'] * 1e-9
        self._traces.add(stamp, result['faces'])
        self._last_emotion = json.dumps({'type': 'emotion', **result}, separators=(',', ':'))
        if not self._update_scheduled:
            self._update_scheduled = True
            self._loop.call_at(max(self._loop.time(), self._next_update), self._send_update)

    def _send_update(self) -> None:
        self._update_scheduled = False
        self._next_update = self._loop.time() + self._update_period
        self._broadcast(self._last_emotion)

    def _on_image(self, data: bytes) -> None:
        self._last_image = data
        for client in self._clients:
            client.push_image(data)

    def _on_status(self, status: dict) -> None:
        self._last_status = json.dumps({'type': 'status', **status}, separators=(',', ':'))
        self._broadcast(self._last_status)

    def _hello(self) -> dict:
        return {'type': 'hello', 'allow_control': self.allow_control, 'control_note': control_note(self.allow_control),
                'trace_seconds': self._traces.window_s, 'circumplex': CIRCUMPLEX, **self._info}

    def _state(self) -> dict:
        """What /api/state answers: the hello, then the last result and status."""
        return {**self._hello(), 'emotion': json.loads(self._last_emotion) if self._last_emotion else None,
                'status': json.loads(self._last_status) if self._last_status else None,
                'clients': len(self._clients)}

    async def _start_site(self) -> None:
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_WS_MESSAGE_BYTES)
        app.router.add_get('/', self._index)
        app.router.add_get('/api/state', self._api_state)
        app.router.add_get('/ws', self._websocket)
        app.router.add_static('/static/', STATIC_DIR, follow_symlinks=False)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        self.port = self._runner.addresses[0][1]

    async def _shut_down(self) -> None:
        for client in list(self._clients):
            await client.ws.close(code=1001, message=b'server stopping')
        await self._runner.cleanup()

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        """Refuse requests that name another host while we serve loopback only (DNS rebinding); add
        the security headers."""
        if is_loopback(self.host) and not is_loopback(host_name(request.host)):
            return web.json_response({'error': f'host {request.host!r} refused: this server only answers to '
                                               'localhost'}, status=403)
        try:
            response = await handler(request)
        except web.HTTPException as error:
            if error.status < 400:
                raise
            response = web.json_response({'error': f'{error.status} {error.reason}: {request.method} '
                                                   f'{request.path}'}, status=error.status)
        if not response.prepared:
            response.headers.update(SECURITY_HEADERS)
        return response

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / 'index.html')

    async def _api_state(self, request: web.Request) -> web.Response:
        return web.json_response(self._state())

    async def _websocket(self, request: web.Request):
        origin = request.headers.get('Origin')
        if origin is not None and urlsplit(origin).netloc != request.host:
            return web.json_response({'error': f'origin {origin!r} refused: the page must come from this '
                                               'server'}, status=403)
        # No permessage-deflate: the frames are JPEG already, and aiohttp compresses large messages in a
        # shielded task whose error on a page that went away mid-send would be logged as never retrieved.
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=MAX_WS_MESSAGE_BYTES, compress=False)
        if not ws.can_prepare(request).ok:
            return web.json_response({'error': '/ws expects a WebSocket upgrade request'}, status=400)
        await ws.prepare(request)
        client = ClientChannel(ws)
        for text in self._greeting():
            client.push_event(text)
        if self._last_image is not None:
            client.push_image(self._last_image)
        self._clients.add(client)
        sender = asyncio.create_task(client.send_forever())
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._handle_text(client, message.data)
                elif message.type == WSMsgType.BINARY:
                    client.push_event(error_message('binary messages are not accepted: send JSON text'))
        except ConnectionError:  # the page went away mid-message
            pass
        finally:
            self._clients.discard(client)
            sender.cancel()
        return ws

    def _greeting(self) -> list[str]:
        """What a page gets on connecting: who we are, then the state so far."""
        texts = [json.dumps(self._hello()),
                 json.dumps({'type': 'traces', 'faces': self._traces.snapshot()}, separators=(',', ':'))]
        return texts + [text for text in (self._last_models, self._last_status, self._last_emotion) if text]

    def _handle_text(self, client: ClientChannel, text: str) -> None:
        try:
            request = parse_request(text)
        except ProtocolError as error:
            client.push_event(error_message(f'bad request: {error}'))
            return
        if request.is_control and not self.allow_control:
            self._logger.warning(f'refused a {request.kind} request from the web page: allow_control is false')
            client.push_event(error_message(f'{request.kind} refused: control is off on this server '
                                            '(parameter allow_control is false)', request))
            return
        if request.is_control:
            if self._control_running:
                client.push_event(error_message(f'{request.kind} refused: a {self._control_running} is still '
                                                'running', request))
                return
            self._control_running = request.kind
            self._logger.info(f'web page request: {request.kind} {request.args}')
        asyncio.get_running_loop().create_task(self._answer(client, request))

    async def _answer(self, client: ClientChannel, request: Request) -> None:
        """Forward a request to the emotion node and reply with its answer (or why there is none)."""
        try:
            if request.kind == 'switch_model':
                future = self._controller.switch_model(request.args['model'])
            elif request.kind == 'self_check':
                future = self._controller.self_check(**request.args)
            else:
                future = self._controller.list_models()
            timeout = REQUEST_TIMEOUT_S[request.kind]
            answer = await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except asyncio.TimeoutError:
            client.push_event(error_message(f'{request.kind}: the emotion node did not answer within '
                                            f'{REQUEST_TIMEOUT_S[request.kind]:g} s', request))
            return
        except Exception as error:  # the service is missing or the call failed: tell the page
            client.push_event(error_message(f'{request.kind} failed: {error}', request))
            return
        finally:
            if request.is_control:
                self._control_running = None
        client.push_event(json.dumps({'type': 'reply', 'request': request.kind, 'id': request.id, **answer}))
        if request.kind in ('list_models', 'switch_model') and answer.get('ok'):
            self._last_models = json.dumps({'type': 'models', 'active_model': answer.get('active_model', ''),
                                            'available_models': answer.get('available_models', [])})
            self._broadcast(self._last_models)


def error_message(text: str, request: Request | None = None) -> str:
    """The JSON text of an error reply (to ``request``, when it was one)."""
    return json.dumps({'type': 'error', 'error': text, 'request': request.kind if request else None,
                       'id': request.id if request else None})
