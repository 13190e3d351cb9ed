"""Conversions between sensor_msgs image fields and numpy arrays, without cv_bridge.

Every decoder checks the fields against the data and raises ImageDecodeError
with a clear message instead of returning a wrong picture. Compressed streams
are read header first: the declared size is checked against ``max_pixels``
and every PNG chunk / JPEG segment length against the bytes present, so a few
hundred bytes that claim a gigapixel image are refused before anything is
allocated or decoded.
"""

import struct
from dataclasses import dataclass

import cv2
import numpy as np

# Largest image accepted by default, in pixels: 4096 x 4096 (a 4K camera frame
# is 3840 x 2160), 50 MB as BGR.
MAX_PIXELS = 4096 * 4096
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
JPEG_SIGNATURE = b'\xff\xd8\xff'
# JPEG start-of-frame markers (C4 DHT, C8 JPG and CC DAC share the range but are not frames).
JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})
JPEG_START_OF_SCAN = 0xDA


class ImageDecodeError(ValueError):
    """An image message that cannot be turned into a picture."""


@dataclass(frozen=True)
class PixelFormat:
    channels: int
    dtype: np.dtype
    to_bgr: int | None  # cv2 conversion code; None when the pixels are already BGR


PIXEL_FORMATS = {
    'bgr8': PixelFormat(3, np.dtype(np.uint8), None),
    'rgb8': PixelFormat(3, np.dtype(np.uint8), cv2.COLOR_RGB2BGR),
    'bgra8': PixelFormat(4, np.dtype(np.uint8), cv2.COLOR_BGRA2BGR),
    'rgba8': PixelFormat(4, np.dtype(np.uint8), cv2.COLOR_RGBA2BGR),
    'mono8': PixelFormat(1, np.dtype(np.uint8), cv2.COLOR_GRAY2BGR),
    '8uc1': PixelFormat(1, np.dtype(np.uint8), cv2.COLOR_GRAY2BGR),
    '8uc3': PixelFormat(3, np.dtype(np.uint8), None),
    'mono16': PixelFormat(1, np.dtype(np.uint16), cv2.COLOR_GRAY2BGR),
    '16uc1': PixelFormat(1, np.dtype(np.uint16), cv2.COLOR_GRAY2BGR),
}


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f'zero-size image ({width}x{height})')
    if width * height > max_pixels:
        raise ImageDecodeError(f'image too large ({width}x{height} > {max_pixels} pixels)')


def raw_to_bgr(encoding: str, width: int, height: int, step: int, data, is_bigendian: bool = False,
               max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode the fields of a sensor_msgs/Image into an HxWx3 uint8 BGR array."""
    pixel_format = PIXEL_FORMATS.get(encoding.lower())
    if pixel_format is None:
        raise ImageDecodeError(f'unsupported encoding {encoding!r}; supported: {", ".join(PIXEL_FORMATS)}')
    _check_size(width, height, max_pixels)
    row_bytes = width * pixel_format.channels * pixel_format.dtype.itemsize
    if step < row_bytes:
        raise ImageDecodeError(f'step {step} is smaller than a row of {width} {encoding} pixels ({row_bytes} bytes)')
    buffer = np.frombuffer(data, dtype=np.uint8)
    needed = step * (height - 1) + row_bytes
    if buffer.size < needed:
        raise ImageDecodeError(f'data has {buffer.size} bytes, {width}x{height} {encoding} with step {step} needs {needed}')
    rows = np.lib.stride_tricks.as_strided(buffer, shape=(height, row_bytes), strides=(step, 1))
    dtype = pixel_format.dtype.newbyteorder('>' if is_bigendian else '<')
    pixels = np.ascontiguousarray(rows).view(dtype).reshape(height, width, pixel_format.channels)
    if pixel_format.dtype == np.uint16:
        pixels = (pixels.astype(np.float32) * (255.0 / 65535.0) + 0.5).astype(np.uint8)
    if pixel_format.to_bgr is None:
        return pixels
    return cv2.cvtColor(pixels if pixel_format.channels > 1 else pixels[:, :, 0], pixel_format.to_bgr)


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR, after checking that every chunk fits in the data."""
    offset = len(PNG_SIGNATURE)
    size = None
    while offset + 8 <= len(data):
        length, kind = struct.unpack_from('>I4s', data, offset)
        if length > len(data) - offset - 12:
            raise ImageDecodeError(f'PNG chunk {kind!r} declares {length} bytes, only {len(data) - offset - 12} '
                                   'remain (truncated or corrupt)')
        if size is None:
            if kind != b'IHDR' or length != 13:
                raise ImageDecodeError('PNG does not start with a 13-byte IHDR chunk')
            size = struct.unpack_from('>II', data, offset + 8)
        if kind == b'IEND':
            break
        offset += 12 + length
    if size is None:
        raise ImageDecodeError(f'PNG of {len(data)} bytes has no IHDR chunk')
    return size


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's start-of-frame segment, checking each segment length on the way."""
    offset = 2
    while offset < len(data):
        if data[offset] != 0xFF:
            raise ImageDecodeError(f'JPEG marker expected at byte {offset}, found 0x{data[offset]:02x}')
        while offset < len(data) and data[offset] == 0xFF:  # fill bytes
            offset += 1
        if offset >= len(data):
            break
        marker = data[offset]
        offset += 1
        if marker in JPEG_STANDALONE_MARKERS:
            continue
        if offset + 2 > len(data):
            break
        (length,) = struct.unpack_from('>H', data, offset)
        if length < 2 or offset + length > len(data):
            raise ImageDecodeError(f'JPEG segment 0x{marker:02x} declares {length} bytes, '
                                   f'{len(data) - offset} remain (truncated or corrupt)')
        if marker in JPEG_SOF_MARKERS:
            if length < 8:
                raise ImageDecodeError(f'JPEG frame header of {length} bytes is too short')
            height, width = struct.unpack_from('>HH', data, offset + 3)
            return width, height
        if marker == JPEG_START_OF_SCAN:
            break
        offset += length
    raise ImageDecodeError(f'JPEG of {len(data)} bytes has no frame header before its image data')


def compressed_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) read from the header of JPEG or PNG bytes; anything else is refused."""
    if data.startswith(PNG_SIGNATURE):
        return ('png', *png_size(data))
    if data.startswith(JPEG_SIGNATURE):
        return ('jpeg', *jpeg_size(data))
    raise ImageDecodeError(f'compressed data is neither JPEG nor PNG (starts with {data[:8].hex()})')


def compressed_to_bgr(image_format: str, data, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode the bytes of a sensor_msgs/CompressedImage (jpeg, png) into BGR.

    The header is checked first (:func:`compressed_size`): a declared size over
    ``max_pixels`` is refused before decoding. ``image_format`` (the message's
    free-form field) is only quoted in errors; the bytes say what they are.
    """
    data = bytes(data)
    if not data:
        raise ImageDecodeError('compressed image has no data')
    kind, width, height = compressed_size(data)
    try:
        _check_size(width, height, max_pixels)
    except ImageDecodeError as error:
        raise ImageDecodeError(f'{kind} header: {error}') from None
    buffer = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageDecodeError(f'cannot decode {buffer.size} bytes of compressed image (format {image_format!r})')
    return image


def bgr_to_raw(image: np.ndarray, encoding: str = 'bgr8') -> tuple[int, int, int, bytes]:
    """Encode a BGR (or gray) uint8 array as (width, height, step, data) for sensor_msgs/Image."""
    if encoding == 'bgr8':
        pixels = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif encoding == 'rgb8':
        pixels = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif encoding == 'mono8':
        pixels = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    else:
        raise ImageDecodeError(f'cannot encode to {encoding!r}; use bgr8, rgb8 or mono8')
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width = pixels.shape[:2]
    return width, height, pixels.strides[0], pixels.tobytes()


def bgr_to_compressed(image: np.ndarray, image_format: str = 'jpeg', quality: int = 90) -> bytes:
    """Encode a BGR array as jpeg or png bytes for sensor_msgs/CompressedImage."""
    extension = {'jpeg': '.jpg', 'jpg': '.jpg', 'png': '.png'}.get(image_format)
    if extension is None:
        raise ImageDecodeError(f'cannot compress to {image_format!r}; use jpeg or png')
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if extension == '.jpg' else []
    ok, encoded = cv2.imencode(extension, image, params)
    if not ok:
        raise ImageDecodeError(f'OpenCV failed to encode a {image.shape} image as {image_format}')
    return encoded.tobytes()
