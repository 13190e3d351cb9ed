"""Frames from a video file, an image folder or an OpenCV camera (no ROS)."""

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')


class FrameSourceError(ValueError):
    """A source that cannot be opened or read."""


class FrameSource:
    """Iterate BGR frames from ``source``: a video file, an image folder or a camera index.

    ``native_rate`` is the source's own frame rate when it has one (videos), else None.
    """

    def __init__(self, source: str):
        self.source = source
        self.native_rate: float | None = None
        self._capture = None
        self._images: list[Path] = []
        path = Path(source).expanduser()
        if source.isdigit():
            self._capture = cv2.VideoCapture(int(source))
        elif path.is_dir():
            self._images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self._images:
                raise FrameSourceError(f'no images ({", ".join(IMAGE_SUFFIXES)}) in folder {path}')
        elif path.is_file():
            self._capture = cv2.VideoCapture(str(path))
        else:
            raise FrameSourceError(f'{source!r} is neither a camera index, a folder nor a file')
        if self._capture is not None:
            if not self._capture.isOpened():
                raise FrameSourceError(f'OpenCV cannot open {source!r}')
            fps = self._capture.get(cv2.CAP_PROP_FPS)
            self.native_rate = fps if fps and fps > 0 and not source.isdigit() else None

    def frames(self) -> Iterator[np.ndarray]:
        if self._capture is not None:
            while True:
                ok, frame = self._capture.read()
                if not ok:
                    return
                yield frame
        for image_path in self._images:
            frame = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
            if frame is None:
                raise FrameSourceError(f'cannot read image {image_path}')
            yield frame

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
