"""Face alignment: a face in an image -> the gray crop and crop-normalised landmarks a model reads.

:func:`align_face` is used identically when preparing training data and at
inference, so the model always sees the same framing.
"""
import math

import cv2
import numpy as np

# Eye corners of the MediaPipe face mesh, image-left eye then image-right eye.
LEFT_EYE_CORNERS = (33, 133)
RIGHT_EYE_CORNERS = (263, 362)
# Crop side / landmark bounding-box side, and the crop centre's upward shift
# from the box centre (fraction of the side): both measured on FER-2013 crops
# (mesh box 39 x 43 px in a 48 px crop, box centre 4.7 % below crop centre).
FACE_SCALE = 1.12
VERTICAL_OFFSET = 0.047
WARP_OVERSAMPLING = 4


def alignment_matrix(landmarks_px, output_size=48):
    """The 2x3 affine from image pixels to the oversampled work square of :func:`align_face`.

    The face is rotated about the eye midpoint so the eye-corner centres
    (landmarks 33/133 and 263/362) are level; the crop is the square of side
    ``FACE_SCALE`` x the larger side of the rotated landmarks' bounding box,
    centred on that box shifted up by ``VERTICAL_OFFSET`` x side. Returns
    (matrix float64 [2, 3], scale from image pixels to work pixels).
    """
    points = np.asarray(landmarks_px, dtype=np.float64)
    left_eye = points[list(LEFT_EYE_CORNERS), :2].mean(axis=0)
    right_eye = points[list(RIGHT_EYE_CORNERS), :2].mean(axis=0)
    eye_centre = (left_eye + right_eye) / 2
    dx, dy = right_eye - left_eye
    angle = math.atan2(dy, dx)
    rotation = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    rotated = (points[:, :2] - eye_centre) @ rotation.T
    low, high = rotated.min(axis=0), rotated.max(axis=0)
    side = max(FACE_SCALE * float((high - low).max()), 1.0)
    crop_centre = (low + high) / 2 - np.array([0.0, VERTICAL_OFFSET * side])
    work_size = output_size * WARP_OVERSAMPLING
    scale = work_size / side
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = -scale * (rotation @ eye_centre + crop_centre) + work_size / 2
    return matrix, scale


def warp_face(gray, matrix, output_size=48):
    """uint8 gray crop [S, S]: ``gray`` warped by an :func:`alignment_matrix`, border replicated,
    then area-averaged down from the oversampled work square."""
    work_size = output_size * WARP_OVERSAMPLING
    warped = cv2.warpAffine(gray, matrix, (work_size, work_size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(warped, (output_size, output_size), interpolation=cv2.INTER_AREA)


def align_face(image, landmarks_px, output_size=48):
    """Similarity-align a face into a square crop like FER-2013's framing (:func:`alignment_matrix`).

    ``image``: uint8 gray [H, W] or BGR [H, W, 3]. ``landmarks_px``: [468, 3]
    MediaPipe landmarks in image pixels (x, y; z in the same pixel scale,
    i.e. MediaPipe's normalised z times the image width). Pixels outside the
    image replicate the border. Returns (crop uint8 [S, S] gray, landmarks
    float32 [468, 3] crop-normalised: x, y in [0, 1] of the crop, z divided by
    the crop side).
    """
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    points = np.asarray(landmarks_px, dtype=np.float64)
    matrix, scale = alignment_matrix(points, output_size)
    crop = warp_face(gray, matrix, output_size)
    work_size = output_size * WARP_OVERSAMPLING
    aligned = np.empty_like(points)
    work_xy = points[:, :2] @ matrix[:, :2].T + matrix[:, 2]
    # INTER_AREA: output pixel j averages work pixels F*j .. F*j + F - 1.
    aligned[:, :2] = (work_xy - (WARP_OVERSAMPLING - 1) / 2) / WARP_OVERSAMPLING / output_size
    aligned[:, 2] = points[:, 2] * scale / work_size
    return crop, aligned.astype(np.float32)
