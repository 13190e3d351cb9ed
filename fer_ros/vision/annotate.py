"""Draw face boxes, labels and confidences on a frame (for image viewers)."""

import cv2
import numpy as np

BOX_COLOR = (60, 200, 60)
TEXT_COLOR = (255, 255, 255)


def annotate_faces(image_bgr: np.ndarray, faces) -> np.ndarray:
    """A copy of the frame with each face's box and 'id label confidence' drawn on it."""
    canvas = image_bgr.copy()
    scale = max(0.4, min(canvas.shape[:2]) / 800.0)
    for face in faces:
        x, y, w, h = face.box
        cv2.rectangle(canvas, (x, y), (x + w, y + h), BOX_COLOR, 2)
        text = f'{face.face_id} {face.label} {face.confidence:.2f}'
        (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        top = max(y - text_h - baseline - 4, 0)
        cv2.rectangle(canvas, (x, top), (x + text_w + 4, top + text_h + baseline + 4), BOX_COLOR, cv2.FILLED)
        cv2.putText(canvas, text, (x + 2, top + text_h + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT_COLOR, 1,
                    cv2.LINE_AA)
    return canvas
