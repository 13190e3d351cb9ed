"""The web view's WebSocket protocol: requests from the page, checked before anything acts on them.

Server to page: JSON text messages with a ``type`` (hello, emotion, traces, status, models, reply,
self_check, error) and binary image messages (:func:`pack_image`). Page to server: JSON text
requests ``{"type": ..., "id": ...}``:

  list_models                                   which models the emotion node can serve (always allowed)
  switch_model  {"model": NAME}                 control: calls the node's switch_model service
  self_check    {"samples": N, "attacks": [...], "epsilons": [...]}
                                                control: calls the node's run_self_check service

Only the shape is checked here; the emotion node decides which model names and attacks exist.
"""

import json
import struct
from dataclasses import dataclass, field

MAX_REQUEST_BYTES = 4096
MAX_NAME_CHARS = 200
MAX_LIST_ITEMS = 16
MAX_SAMPLES = 1000
MAX_EPSILON = 64.0
CONTROL_REQUESTS = frozenset({'switch_model', 'self_check'})
REQUESTS = frozenset({'list_models'}) | CONTROL_REQUESTS


class ProtocolError(ValueError):
    """A request the server cannot accept; the message says why."""


@dataclass
class Request:
    kind: str
    id: str | int | None = None
    args: dict = field(default_factory=dict)

    @property
    def is_control(self) -> bool:
        return self.kind in CONTROL_REQUESTS


def parse_request(text: str) -> Request:
    """The request in a text message; ProtocolError naming the first problem."""
    if len(text.encode('utf-8', errors='replace')) > MAX_REQUEST_BYTES:
        raise ProtocolError(f'request longer than {MAX_REQUEST_BYTES} bytes')
    try:
        message = json.loads(text)
    except ValueError as error:
        raise ProtocolError(f'not JSON: {error}') from None
    if not isinstance(message, dict):
        raise ProtocolError('a request is a JSON object with a "type"')
    request_id = message.get('id')
    if request_id is not None and (isinstance(request_id, bool) or not isinstance(request_id, (str, int))
                                   or len(str(request_id)) > MAX_NAME_CHARS):
        raise ProtocolError('"id" must be a short string or an integer')
    kind = message.get('type')
    if kind not in REQUESTS:
        raise ProtocolError(f'unknown request type {kind!r}; known: {sorted(REQUESTS)}')
    if kind == 'switch_model':
        args = {'model': _name(message.get('model'), 'model')}
    elif kind == 'self_check':
        args = {'samples': _samples(message.get('samples', 0)),
                'attacks': [_name(a, 'attack') for a in _list(message.get('attacks', []), 'attacks')],
                'epsilons': [_epsilon(e) for e in _list(message.get('epsilons', []), 'epsilons')]}
    else:
        args = {}
    return Request(kind, request_id, args)


def _name(value, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
        raise ProtocolError(f'"{what}" must be a non-empty string of at most {MAX_NAME_CHARS} characters')
    return value


def _list(value, what: str) -> list:
    if not isinstance(value, list) or len(value) > MAX_LIST_ITEMS:
        raise ProtocolError(f'"{what}" must be a list of at most {MAX_LIST_ITEMS} items')
    return value


def _samples(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SAMPLES:
        raise ProtocolError(f'"samples" must be an integer from 0 (the node\'s default) to {MAX_SAMPLES}')
    return value


def _epsilon(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_EPSILON:
        raise ProtocolError(f'each epsilon must be a number in (0, {MAX_EPSILON:g}] (1/255 units)')
    return float(value)


def pack_image(meta: dict, jpeg: bytes) -> bytes:
    """A binary image message: 4-byte big-endian length of the JSON metadata, the metadata, the JPEG."""
    header = json.dumps(meta, separators=(',', ':')).encode()
    return struct.pack('>I', len(header)) + header + jpeg


def unpack_image(data: bytes) -> tuple[dict, bytes]:
    """(metadata, JPEG bytes) of a binary image message."""
    (length,) = struct.unpack_from('>I', data)
    return json.loads(data[4:4 + length]), data[4 + length:]
