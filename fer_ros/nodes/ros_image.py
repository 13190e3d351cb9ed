"""sensor_msgs image messages <-> BGR numpy arrays (the ROS side of vision.image_codec)."""

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from fer_ros.vision.image_codec import MAX_PIXELS, bgr_to_compressed, bgr_to_raw, compressed_to_bgr, raw_to_bgr


def message_to_bgr(message, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an Image or CompressedImage; raises ImageDecodeError on bad input or over max_pixels."""
    if isinstance(message, CompressedImage):
        return compressed_to_bgr(message.format, message.data, max_pixels)
    return raw_to_bgr(message.encoding, message.width, message.height, message.step, message.data,
                      bool(message.is_bigendian), max_pixels)


def bgr_to_image_message(image: np.ndarray, header, encoding: str = 'bgr8') -> Image:
    width, height, step, data = bgr_to_raw(image, encoding)
    return Image(header=header, height=height, width=width, encoding=encoding, is_bigendian=0, step=step, data=data)


def bgr_to_compressed_message(image: np.ndarray, header, image_format: str = 'jpeg') -> CompressedImage:
    return CompressedImage(header=header, format=image_format, data=bgr_to_compressed(image, image_format))
