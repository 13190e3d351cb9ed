"""Malformed camera frames for robustness checks, generated from a seed (no ROS imports).

Each :class:`FuzzFrame` holds the fields of a ``sensor_msgs/Image`` (``raw``)
or a ``sensor_msgs/CompressedImage`` (``compressed``) and what a correct
receiver does with it: ``refuse`` (a clear decode error, nothing allocated
for a lying header), ``decode`` (a valid if odd picture: extreme pixels,
padded rows) or ``either`` (damaged compressed data that a decoder may
partly recover). ``benchmarks/reliability.py`` and the tests send them to a
real node between valid face frames.
"""

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from fer_ros.vision.image_codec import PIXEL_FORMATS

REFUSE, DECODE, EITHER = 'refuse', 'decode', 'either'
INVALID_ENCODINGS = ('', 'yuv422', 'yuyv', 'bayer_rggb8', '32FC1', '16UC3', 'rgb16', 'bgr8 ', 'BGR 8',
                     'x' * 300, 'bgr8é', 'jpeg', '8UC4', '64FC1')
UINT32_MAX = (1 << 32) - 1
OTHER_MAGIC = (b'BM', b'GIF89a', b'II*\x00', b'RIFF\x00\x00\x00\x00WEBP', b'\x00\x00\x00\x0cjP  ')


@dataclass(frozen=True)
class FuzzFrame:
    kind: str            # 'raw' or 'compressed'
    case: str            # what is wrong with it
    expected: str        # REFUSE, DECODE or EITHER
    encoding: str = ''
    width: int = 0
    height: int = 0
    step: int = 0
    is_bigendian: bool = False
    image_format: str = ''
    data: bytes = b''


def _raw(case, expected, encoding, width, height, step, data, is_bigendian=False) -> FuzzFrame:
    return FuzzFrame('raw', case, expected, encoding, width, height, step, is_bigendian, data=bytes(data))


def _compressed(case, expected, data, image_format='jpeg') -> FuzzFrame:
    return FuzzFrame('compressed', case, expected, image_format=image_format, data=bytes(data))


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack('>I', len(payload)) + kind + payload + struct.pack('>I', zlib.crc32(kind + payload))


def _jpeg_frame_offset(jpeg: bytes) -> int:
    """Offset of the SOF0 marker of a baseline JPEG written by OpenCV, found by walking its segments."""
    offset = 2
    while jpeg[offset + 1] != 0xC0:
        offset += 2 + struct.unpack_from('>H', jpeg, offset + 2)[0]
    return offset


def _raw_cases(rng: np.random.Generator) -> list[FuzzFrame]:
    width, height = int(rng.integers(1, 96)), int(rng.integers(1, 96))
    encoding = list(PIXEL_FORMATS)[int(rng.integers(len(PIXEL_FORMATS)))]
    pixel = PIXEL_FORMATS[encoding]
    row = width * pixel.channels * pixel.dtype.itemsize
    size = row * height
    pad = int(rng.integers(1, 64))
    noise = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    huge = int(rng.choice([1 << 16, 1 << 20, (1 << 31) - 1, UINT32_MAX]))
    huge_step = int(rng.choice([1 << 20, (1 << 31) - 1, UINT32_MAX]))
    return [
        _raw('invalid encoding', REFUSE, INVALID_ENCODINGS[int(rng.integers(len(INVALID_ENCODINGS)))], width, height,
             row, noise),
        _raw('data shorter than the header says', REFUSE, encoding, width, height, row,
             noise[:int(rng.integers(0, size))]),
        _raw('data longer than the header says', DECODE, encoding, width, height, row,
             noise + bytes(int(rng.integers(1, 4096)))),
        _raw('zero width or height', REFUSE, encoding, int(rng.integers(0, 2)) * width, 0, row, noise),
        _raw('huge width and height, tiny data', REFUSE, encoding, huge, huge, min(huge * row, UINT32_MAX),
             noise[:64]),
        _raw('huge step', REFUSE, encoding, width, height + 1, huge_step, noise),
        _raw('step smaller than a row', REFUSE, encoding, width, height, max(0, row - int(rng.integers(1, row + 1))),
             noise),
        _raw('padded rows', DECODE, encoding, width, height, row + pad,
             rng.integers(0, 256, (row + pad) * height, dtype=np.uint8).tobytes()),
        _raw('big-endian flag', DECODE, encoding, width, height, row, noise, is_bigendian=True),
        _raw('extreme pixels', DECODE, encoding, width, height, row,
             np.full(size, int(rng.choice([0, 255])), np.uint8).tobytes()),
        _raw('zero-byte payload', REFUSE, encoding, width, height, row, b''),
        _raw('multi-megabyte payload, small header', DECODE, encoding, width, height, row,
             rng.integers(0, 256, int(rng.integers(2, 9)) << 20, dtype=np.uint8).tobytes()),
    ]


def _compressed_cases(rng: np.random.Generator, image: np.ndarray) -> list[FuzzFrame]:
    jpeg = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 95))])[1].tobytes()
    png = cv2.imencode('.png', image)[1].tobytes()
    cases = []
    for name, data in (('jpeg', jpeg), ('png', png)):
        cut = int(rng.integers(0, len(data)))
        cases.append(_compressed(f'truncated {name}', EITHER, data[:cut], name))
        flipped = bytearray(data)
        for position in rng.integers(0, len(data), int(rng.integers(1, 20))):
            flipped[position] ^= 1 << int(rng.integers(0, 8))
        cases.append(_compressed(f'bit-flipped {name}', EITHER, flipped, name))
    side = int(rng.choice([16000, 40000, 65535]))
    sof = _jpeg_frame_offset(jpeg)
    lying_jpeg = bytearray(jpeg[:sof + 5]) + struct.pack('>HH', side, side) + jpeg[sof + 9:sof + 400]
    cases.append(_compressed('jpeg header of 16000x16000 or more', REFUSE, lying_jpeg))
    ihdr = struct.pack('>IIBBBBB', side * 4, side * 4, 8, 2, 0, 0, 0)
    cases.append(_compressed('png header of a gigapixel image', REFUSE,
                             png[:8] + _png_chunk(b'IHDR', ihdr) + png[33:33 + 300], 'png'))
    gigabyte_chunk = struct.pack('>I', int(rng.integers(1 << 30, 1 << 31))) + b'IDAT' + bytes(200)
    cases.append(_compressed('png chunk declaring gigabytes', REFUSE, png[:33] + gigabyte_chunk, 'png'))
    cases.append(_compressed('zero-byte payload', REFUSE, b''))
    cases.append(_compressed('random bytes', REFUSE,
                             rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8).tobytes()))
    magic = OTHER_MAGIC[int(rng.integers(0, len(OTHER_MAGIC)))]
    cases.append(_compressed('not jpeg or png', REFUSE, magic + bytes(int(rng.integers(0, 512))), 'bmp'))
    cases.append(_compressed('multi-megabyte bytes behind a jpeg marker', EITHER,
                             b'\xff\xd8\xff' + rng.integers(0, 256, int(rng.integers(1, 5)) << 20,
                                                            dtype=np.uint8).tobytes()))
    return cases


def fuzz_frames(count: int, seed: int = 0, image: np.ndarray | None = None) -> Iterator[FuzzFrame]:
    """``count`` malformed frames, one at a time (some carry megabytes), cycling through every case
    in a shuffled order with fresh random values per round.

    ``image``: the BGR picture the JPEG/PNG cases damage (default: a gradient).
    """
    rng = np.random.default_rng(seed)
    if image is None:
        ramp = np.linspace(0, 255, 64, dtype=np.uint8)
        image = np.dstack([np.tile(ramp, (48, 1)), np.tile(ramp[:48, None], (1, 64)), np.full((48, 64), 90, np.uint8)])
    produced = 0
    while produced < count:
        round_frames = _raw_cases(rng) + _compressed_cases(rng, image)
        for index in rng.permutation(len(round_frames))[:count - produced]:
            yield round_frames[index]
            produced += 1
