"""MediaPipe face-mesh landmarks for dataset images, cached on disk.

Landmarks are stored *crop-normalised*: x / width, y / height and z / width
of the source image (z in MediaPipe's convention: depth in the scale of x).

Small crops (FER-2013 is 48x48) are upscaled so the shorter side is 192 px and
padded with a black border, which the face detector needs to find a face that
fills the whole image (92 % of FER-2013 crops instead of 84 % unpadded).

Images where no face is found get the fallback :data:`MEAN_TEMPLATE`: the
mean landmarks of FER-2013 crops, i.e. the template fitted to a FER-style crop
that contains the face; ``found`` is False for them so losses can mask them.
"""
import hashlib
import time
from pathlib import Path

import cv2
import numpy as np

from fer_ros.model.facemesh_constants import MEAN_TEMPLATE

DETECTION_SIZE = 192
DETECTION_PADDING = 64
DETECTION_BATCH = 32  # images per detect_batch call


def read_gray(path):
    """Read an image file as a uint8 grayscale array."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise OSError(f'cannot read image {path}')
    return image


def mean_template():
    """The fallback landmarks, crop-normalised, float32 [468, 3]."""
    return np.asarray(MEAN_TEMPLATE, dtype=np.float32)


def detection_input(gray):
    """(padded RGB image, scale) for landmark detection: small crops upscaled to DETECTION_SIZE, then padded."""
    height, width = gray.shape[:2]
    scale = max(1.0, DETECTION_SIZE / min(height, width))
    resized = cv2.resize(gray, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_CUBIC)
    padded = cv2.copyMakeBorder(resized, *(DETECTION_PADDING,) * 4, cv2.BORDER_CONSTANT, value=0)
    return (padded if padded.ndim == 3 else cv2.cvtColor(padded, cv2.COLOR_GRAY2RGB)), scale


def crop_normalised(points_px, scale, width, height):
    """Landmarks in padded detection-input pixels -> crop-normalised [468, 3] float32 of the original image."""
    points = np.array(points_px, np.float32)
    points[:, :2] -= DETECTION_PADDING
    points /= scale
    return points / np.array([width, height, width], np.float32)


class FaceMeshDetector:
    """MediaPipe FaceMesh in static-image mode, 468 landmarks, no iris refinement."""

    def __init__(self, min_detection_confidence=0.5):
        from mediapipe.python.solutions.face_mesh import FaceMesh
        self._face_mesh = FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False,
                                   min_detection_confidence=min_detection_confidence)

    def detect(self, gray):
        """Crop-normalised landmarks [468, 3] float32 of the image's face, or None."""
        return self.detect_batch([gray])[0]

    def detect_batch(self, grays):
        """Crop-normalised landmarks [468, 3] float32 of each image's face, or None."""
        results = []
        for gray in grays:
            rgb, scale = detection_input(gray)
            result = self._face_mesh.process(rgb)
            if not result.multi_face_landmarks:
                results.append(None)
                continue
            points = np.array([(p.x, p.y, p.z) for p in result.multi_face_landmarks[0].landmark], np.float32)
            points *= np.array([rgb.shape[1], rgb.shape[0], rgb.shape[1]], np.float32)
            results.append(crop_normalised(points, scale, gray.shape[1], gray.shape[0]))
        return results

    def close(self):
        self._face_mesh.close()


class TorchFaceMeshDetector:
    """The same detection with :class:`fer_ros.vision.torch_face_mesh.TorchFaceMesh`, batched (CPU or GPU)."""

    def __init__(self, min_detection_confidence=0.5, device='cpu'):
        from fer_ros.vision.torch_face_mesh import TorchFaceMesh
        self._mesh = TorchFaceMesh(max_faces=1, min_detection_confidence=min_detection_confidence, device=device)

    def detect(self, gray):
        return self.detect_batch([gray])[0]

    def detect_batch(self, grays):
        inputs = [detection_input(gray) for gray in grays]
        faces = self._mesh.detect_batch([rgb[..., ::-1] for rgb, _ in inputs])  # TorchFaceMesh takes BGR
        return [crop_normalised(found[0].landmarks, scale, gray.shape[1], gray.shape[0]) if found else None
                for found, (_, scale), gray in zip(faces, inputs, grays)]

    def close(self):
        self._mesh.close()


BACKENDS = ('mediapipe', 'torch')


def content_key(item):
    """sha1 of an image file's bytes, or of an in-memory uint8 image (shape and pixels)."""
    if isinstance(item, np.ndarray):
        return hashlib.sha1(f'{item.shape}'.encode() + np.ascontiguousarray(item).tobytes()).hexdigest()
    return hashlib.sha1(Path(item).read_bytes()).hexdigest()


def load_image(item):
    """A uint8 gray image from a path or an in-memory array."""
    return item if isinstance(item, np.ndarray) else read_gray(item)


class LandmarkCache:
    """Landmarks keyed by image content (:func:`content_key`), stored as .npz chunks.

    Images are file paths or in-memory uint8 arrays (e.g. rows of fer2013.csv).

    Every ``extract`` call appends new chunk files (written atomically), so an
    interrupted extraction resumes where it stopped.
    """

    def __init__(self, cache_dir, backend='mediapipe', device='cpu'):
        if backend not in BACKENDS:
            raise ValueError(f'landmark backend must be one of {sorted(BACKENDS)}, got {backend!r}')
        self.cache_dir = Path(cache_dir)
        self.backend, self.device = backend, device
        recorded = self.cache_dir / 'backend.txt'
        if recorded.is_file() and recorded.read_text().strip() != backend:
            raise ValueError(f'landmark cache {self.cache_dir} was made with the {recorded.read_text().strip()} '
                             f'backend, not {backend}: use another cache folder')
        self._landmarks = {}
        self._found = {}
        for chunk in sorted(self.cache_dir.glob('chunk_*.npz')):
            with np.load(chunk) as data:
                for key, landmarks, found in zip(data['keys'], data['landmarks'], data['found']):
                    self._landmarks[str(key)] = landmarks
                    self._found[str(key)] = bool(found)

    def __len__(self):
        return len(self._landmarks)

    @property
    def num_without_face(self):
        return sum(not found for found in self._found.values())

    def lookup(self, image):
        """(crop-normalised landmarks float32 [468, 3], found) of a cached image path or array."""
        key = content_key(image)
        if key not in self._landmarks:
            raise KeyError(f'no cached landmarks for {image if not isinstance(image, np.ndarray) else "an array"}; '
                           'run extract() first')
        return self._landmarks[key].astype(np.float32), self._found[key]

    def extract(self, images, chunk_size=2000, log=print):
        """Detect and cache the landmarks of all uncached images (paths or arrays); returns counts."""
        keys = {}
        for image in images:
            key = content_key(image)
            if key not in self._landmarks:
                keys.setdefault(key, image)
        todo = list(keys.items())
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        (self.cache_dir / 'backend.txt').write_text(self.backend)
        detector = (TorchFaceMeshDetector(device=self.device) if self.backend == 'torch' else FaceMeshDetector())
        start = time.monotonic()
        new_without_face = 0
        try:
            for begin in range(0, len(todo), chunk_size):
                batch = todo[begin:begin + chunk_size]
                landmarks, found = [], []
                for offset in range(0, len(batch), DETECTION_BATCH):
                    grays = [load_image(image) for _, image in batch[offset:offset + DETECTION_BATCH]]
                    for points in detector.detect_batch(grays):
                        found.append(points is not None)
                        landmarks.append(mean_template() if points is None else points)
                new_without_face += found.count(False)
                self._write_chunk([key for key, _ in batch], np.stack(landmarks), np.array(found))
                done = begin + len(batch)
                log(f'{done}/{len(todo)} images, {new_without_face} without a face, '
                    f'{time.monotonic() - start:.0f} s')
        finally:
            detector.close()
        return {'cached': len(self), 'extracted': len(todo), 'without_face': self.num_without_face}

    def _write_chunk(self, keys, landmarks, found):
        index = len(list(self.cache_dir.glob('chunk_*.npz')))
        path = self.cache_dir / f'chunk_{index:05d}.npz'
        partial = path.with_suffix('.partial.npz')
        np.savez(partial, keys=np.array(keys), landmarks=landmarks.astype(np.float16), found=found)
        partial.rename(path)
        for key, points, has_face in zip(keys, landmarks, found):
            self._landmarks[key] = points.astype(np.float16)
            self._found[key] = bool(has_face)


def main(argv=None):
    """``fer-landmarks CACHE_DIR IMAGE_DIR...``: fill the cache."""
    import sys
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        raise SystemExit('usage: fer-landmarks CACHE_DIR IMAGE_DIR...')
    suffixes = {'.jpg', '.jpeg', '.png', '.bmp'}
    paths = sorted(p for folder in argv[1:] for p in Path(folder).rglob('*') if p.suffix.lower() in suffixes)
    cache = LandmarkCache(argv[0])
    print(f'{len(paths)} images, {len(cache)} already cached', flush=True)
    stats = cache.extract(paths, log=lambda line: print(line, flush=True))
    print(f'done: {stats}', flush=True)


if __name__ == '__main__':
    main()
