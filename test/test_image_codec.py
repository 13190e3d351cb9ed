"""Image decoding: headers are checked before anything is allocated; the seeded fuzz corpus."""

import struct

import cv2
import numpy as np
import pytest

from fer_ros.fuzz import DECODE, REFUSE, fuzz_frames
from fer_ros.vision.image_codec import (ImageDecodeError, compressed_size, compressed_to_bgr, raw_to_bgr)


@pytest.fixture(scope='module')
def picture() -> np.ndarray:
    rng = np.random.default_rng(3)
    return cv2.GaussianBlur(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8), (5, 5), 0)


def encode(image, extension):
    return cv2.imencode(extension, image)[1].tobytes()


def test_png_and_jpeg_headers_give_the_size(picture):
    assert compressed_size(encode(picture, '.png')) == ('png', 80, 60)
    assert compressed_size(encode(picture, '.jpg')) == ('jpeg', 80, 60)
    assert np.array_equal(compressed_to_bgr('png', encode(picture, '.png')), picture)


def test_jpeg_declaring_16000x16000_is_refused_before_decoding(picture):
    jpeg = bytearray(encode(picture, '.jpg'))
    offset = 2
    while jpeg[offset + 1] != 0xC0:  # walk the segments to the frame header
        offset += 2 + struct.unpack_from('>H', jpeg, offset + 2)[0]
    struct.pack_into('>HH', jpeg, offset + 5, 16000, 16000)
    with pytest.raises(ImageDecodeError, match='16000x16000 > 16777216 pixels'):
        compressed_to_bgr('jpeg', bytes(jpeg))


def test_png_chunk_longer_than_the_data_is_refused(picture):
    png = encode(picture, '.png')
    lying = png[:33] + struct.pack('>I', 3_000_000_000) + b'IDAT' + bytes(100)
    with pytest.raises(ImageDecodeError, match='declares 3000000000 bytes'):
        compressed_to_bgr('png', lying)


def test_max_pixels_applies_to_raw_and_compressed(picture):
    with pytest.raises(ImageDecodeError, match='too large'):
        compressed_to_bgr('png', encode(picture, '.png'), max_pixels=80 * 60 - 1)
    with pytest.raises(ImageDecodeError, match='too large'):
        raw_to_bgr('bgr8', 80, 60, 240, picture.tobytes(), max_pixels=1000)
    assert raw_to_bgr('bgr8', 80, 60, 240, picture.tobytes(), max_pixels=80 * 60).shape == (60, 80, 3)


def test_other_formats_are_refused():
    with pytest.raises(ImageDecodeError, match='neither JPEG nor PNG'):
        compressed_to_bgr('bmp', b'BM' + bytes(200))


def decode(frame):
    if frame.kind == 'raw':
        return raw_to_bgr(frame.encoding, frame.width, frame.height, frame.step, frame.data, frame.is_bigendian)
    return compressed_to_bgr(frame.image_format, frame.data)


def test_fuzz_corpus_is_refused_or_decoded_as_expected():
    outcomes = {}
    for frame in fuzz_frames(600, seed=1):
        try:
            image = decode(frame)
        except ImageDecodeError:
            outcome = REFUSE
        else:
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, frame.case
            outcome = DECODE
        if frame.expected != 'either':
            assert outcome == frame.expected, (frame.case, frame.encoding, frame.width, frame.height, frame.step)
        outcomes.setdefault((frame.kind, frame.case), set()).add(outcome)
    assert len(outcomes) == 23  # every case was generated: 12 raw, 11 compressed


def test_fuzz_corpus_is_reproducible():
    first = [(f.case, f.data[:32], f.width) for f in fuzz_frames(50, seed=7)]
    assert first == [(f.case, f.data[:32], f.width) for f in fuzz_frames(50, seed=7)]
    assert first != [(f.case, f.data[:32], f.width) for f in fuzz_frames(50, seed=8)]
