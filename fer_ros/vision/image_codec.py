"""Conversions between sensor_msgs image fields and numpy arrays, without cv_bridge.

Every decoder checks the fields against the data and raises ImageDecodeError
with a clear message instead of returning a wrong picture.
"""

from dataclasses import dataclass

import cv2
import numpy as np

# Largest image accepted, in pixels (a 10000x10000 header with tiny data is
# refused by the size check anyway; this bounds what a correct message may ask).
MAX_PIXELS = 8192 * 8192


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


def raw_to_bgr(encoding: str, width: int, height: int, step: int, data, is_bigendian: bool = False) -> np.ndarray:
    """Decode the fields of a sensor_msgs/Image into an HxWx3 uint8 BGR array."""
    pixel_format = PIXEL_FORMATS.get(encoding.lower())
    if pixel_format is None:
        raise ImageDecodeError(f'unsupported encoding {encoding!r}; supported: {", ".join(PIXEL_FORMATS)}')
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f'zero-size image ({width}x{height})')
    if width * height > MAX_PIXELS:
        raise ImageDecodeError(f'image too large ({width}x{height} > {MAX_PIXELS} pixels)')
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


def compressed_to_bgr(image_format: str, data) -> np.ndarray:
    """Decode the bytes of a sensor_msgs/CompressedImage (jpeg, png) into BGR."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size == 0:
        raise ImageDecodeError('compressed image has no data')
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
