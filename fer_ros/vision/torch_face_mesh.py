"""MediaPipe's face detector (BlazeFace, short range) and face mesh (468 points) in PyTorch, batched.

The two networks run from MediaPipe's own ``.tflite`` files (see
:mod:`fer_ros.vision.tflite_graph`); the pre- and post-processing follows
MediaPipe's face_detection_short_range and face_landmark graphs:

1. each frame letterboxed to 128x128 in [-1, 1] (grid_sample, one batch);
2. BlazeFace on the batch; boxes and 6 keypoints decoded against the 896 SSD
   anchors; sigmoid scores >= min_detection_confidence; weighted NMS (IoU 0.3);
3. per face, a square ROI 1.5x the box's long side, rotated so the eyes are
   level, cut to 192x192 in [0, 1] (grid_sample, border replicate);
4. the face mesh on all faces of all frames in one batch; faces whose
   face-presence score is below 0.5 are dropped, the 468 points of the others
   projected back to image pixels (z in the same scale as x).

Works on the CPU and on CUDA. The models are MediaPipe's (Apache License 2.0,
Copyright The MediaPipe Authors), read from the installed mediapipe wheel.
"""

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fer_ros.vision.face_mesh import NUM_LANDMARKS, DetectedFace, landmark_box
from fer_ros.vision.face_mesh_files import mediapipe_model_dir
from fer_ros.vision.tflite_graph import load_tflite

DETECTOR_SIZE = 128
MESH_SIZE = 192
ROI_SCALE = 1.5
NMS_IOU = 0.3
SCORE_CLIP = 100.0
MIN_PRESENCE = 0.5  # face-presence score of the mesh, below which MediaPipe drops the face


def ssd_anchors() -> torch.Tensor:
    """Centres [896, 2] of the short-range detector's anchors (16x16 x 2, then 8x8 x 6), normalised."""
    centres = []
    for grid, per_cell in ((16, 2), (8, 6)):
        ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing='ij')
        cells = torch.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], dim=-1).reshape(-1, 2)
        centres.append(cells.repeat_interleave(per_cell, dim=0))
    return torch.cat(centres)


def _pixel_grid(size: int, device) -> torch.Tensor:
    """Output pixel i of a size x size crop at i / size, in [0, 1) units: [size, size, 2] (u, v).

    This is MediaPipe's convention (OpenCV warpAffine of the ROI rectangle onto
    the output): output pixel i samples the rectangle at i / size of its side.
    """
    steps = torch.arange(size, device=device, dtype=torch.float32) / size
    v, u = torch.meshgrid(steps, steps, indexing='ij')
    return torch.stack([u, v], dim=-1)


def _sample(images: torch.Tensor, points: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """Bilinear samples of images [N, C, H, W] at points [N, h, w, 2] (OpenCV pixel coordinates: pixel j's
    centre at j) -> [N, C, h, w]."""
    height, width = images.shape[-2:]
    grid = torch.stack([(2 * points[..., 0] + 1) / width - 1, (2 * points[..., 1] + 1) / height - 1], dim=-1)
    return F.grid_sample(images, grid, mode='bilinear', padding_mode=padding_mode, align_corners=False)


def weighted_nms(boxes, keypoints, scores, iou_threshold=NMS_IOU, limit=None):
    """MediaPipe's weighted non-maximum suppression on one frame's candidates.

    boxes [K, 4] (x0, y0, x1, y1), keypoints [K, 6, 2], scores [K]; each kept
    face is the score-weighted mean of the candidates that overlap the best
    remaining one by more than iou_threshold. Returns (boxes, keypoints, scores).
    """
    order = scores.argsort(descending=True)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    area = (boxes[:, 2] - boxes[:, 0]).clamp_min(0) * (boxes[:, 3] - boxes[:, 1]).clamp_min(0)
    top_left = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    intersection = (bottom_right - top_left).clamp_min(0).prod(dim=-1)
    iou = intersection / (area[:, None] + area[None, :] - intersection).clamp_min(1e-9)
    remaining = torch.ones(len(scores), dtype=torch.bool, device=scores.device)
    kept = []
    while remaining.any() and (limit is None or len(kept) < limit):
        best = int(torch.nonzero(remaining)[0])
        cluster = remaining & (iou[best] > iou_threshold)
        cluster[best] = True
        weights = scores[cluster] / scores[cluster].sum()
        kept.append(((boxes[cluster] * weights[:, None]).sum(0),
                     (keypoints[cluster] * weights[:, None, None]).sum(0), scores[best]))
        remaining &= ~cluster
    if not kept:
        return boxes[:0], keypoints[:0], scores[:0]
    return tuple(torch.stack(parts) for parts in zip(*kept))


class TorchFaceMesh:
    """Batched face detection + 468-point face mesh; ``detect_batch`` of several frames at once."""

    def __init__(self, max_faces: int = 4, min_detection_confidence: float = 0.5, device='cpu', model_dir=None):
        model_dir = Path(model_dir) if model_dir else mediapipe_model_dir()
        self.device = torch.device(device)
        self.max_faces, self.min_score = max_faces, min_detection_confidence
        self.detector = load_tflite(model_dir / 'face_detection' / 'face_detection_short_range.tflite')
        self.mesh = load_tflite(model_dir / 'face_landmark' / 'face_landmark.tflite')
        self.detector.to(self.device).eval()
        self.mesh.to(self.device).eval()
        self.anchors = ssd_anchors().to(self.device)
        self._detector_outputs = [self.detector.output_names.index(n) for n in ('regressors', 'classificators')]
        self._mesh_outputs = [self.mesh.output_names.index(n) for n in ('conv2d_21', 'conv2d_31')]

    def detect(self, image_bgr: np.ndarray) -> list[DetectedFace]:
        return self.detect_batch([image_bgr])[0]

    @torch.no_grad()
    def detect_batch(self, images_bgr: list[np.ndarray]) -> list[list[DetectedFace]]:
        """Faces of every frame (BGR uint8 arrays of any sizes).

        Frames of one size go to the device in one copy and are letterboxed and
        cropped together; the detector's non-maximum suppression runs on the
        CPU, so a GPU is waited on twice per batch rather than per frame.
        """
        if not images_bgr:
            return []
        groups = self._frame_groups(images_bgr)
        rois = self._detect_rois(groups, len(images_bgr))  # per frame: [F, 4] (cx, cy, side, angle), CPU
        crops, owners, cropped_rois = [], [], []
        for indices, frames in groups:
            faces = [(row, rois[index]) for row, index in enumerate(indices) if len(rois[index])]
            if not faces:
                continue
            group_rois = torch.cat([frame_rois for _, frame_rois in faces]).to(self.device)
            rows = torch.tensor([row for row, frame_rois in faces for _ in range(len(frame_rois))],
                                device=self.device)
            crops.append(_sample(frames[rows], self._roi_points(group_rois, MESH_SIZE), 'border'))
            owners += [indices[row] for row, frame_rois in faces for _ in range(len(frame_rois))]
            cropped_rois.append(group_rois)
        results = [[] for _ in images_bgr]
        if not crops:
            return results
        all_rois = torch.cat(cropped_rois)
        outputs = self.mesh(torch.cat(crops).permute(0, 2, 3, 1))
        raw = outputs[self._mesh_outputs[0]].reshape(-1, NUM_LANDMARKS, 3) / MESH_SIZE
        points = self._project(raw, all_rois).cpu().numpy()
        present = (torch.sigmoid(outputs[self._mesh_outputs[1]].reshape(-1)) >= MIN_PRESENCE).cpu().numpy()
        for owner, face_points, is_face in zip(owners, points, present):
            if not is_face:
                continue
            height, width = images_bgr[owner].shape[:2]
            box = landmark_box(face_points, width, height)
            if box[2] > 1 and box[3] > 1:
                results[owner].append(DetectedFace(face_points.astype(np.float32), box))
        return results

    def _frame_groups(self, images_bgr: list[np.ndarray]) -> list[tuple[list[int], torch.Tensor]]:
        """(frame indices, RGB frames [G, 3, H, W] in [0, 1] on the device) per frame size."""
        by_shape = {}
        for index, image in enumerate(images_bgr):
            by_shape.setdefault(image.shape, []).append(index)
        groups = []
        for indices in by_shape.values():
            stacked = torch.from_numpy(np.stack([images_bgr[index] for index in indices])).to(self.device)
            groups.append((indices, stacked.flip(-1).permute(0, 3, 1, 2).float() / 255.0))
        return groups

    def _detect_rois(self, groups, count: int) -> list[torch.Tensor]:
        """ROIs [F, 4] on the CPU of each of ``count`` frames, from their groups (see _frame_groups)."""
        inputs, order, scales, offsets = [], [], [], []
        for indices, frames in groups:
            height, width = frames.shape[-2:]
            scale = max(width, height) / DETECTOR_SIZE  # image pixels per detector pixel
            offset = torch.tensor([(width - DETECTOR_SIZE * scale) / 2, (height - DETECTOR_SIZE * scale) / 2])
            grid = _pixel_grid(DETECTOR_SIZE, self.device) * DETECTOR_SIZE * scale + offset.to(self.device)
            inputs.append(_sample(frames, grid.expand(len(indices), -1, -1, -1), 'zeros'))
            order += indices
            scales += [scale] * len(indices)
            offsets += [offset] * len(indices)
        batch = torch.cat(inputs) * 2 - 1  # letterbox padding becomes -1 (black), as in MediaPipe
        outputs = self.detector(batch.permute(0, 2, 3, 1))
        regressors, logits = outputs[self._detector_outputs[0]], outputs[self._detector_outputs[1]][..., 0]
        scores = torch.sigmoid(logits.clamp(-SCORE_CLIP, SCORE_CLIP))
        anchors = self.anchors[None]
        centres = regressors[..., :2] / DETECTOR_SIZE + anchors
        sizes = regressors[..., 2:4] / DETECTOR_SIZE
        boxes = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=-1)
        keypoints = regressors[..., 4:16].reshape(*regressors.shape[:2], 6, 2) / DETECTOR_SIZE + anchors[:, :, None]
        scores, boxes, keypoints = scores.cpu(), boxes.cpu(), keypoints.cpu()
        rois = [None] * count
        for row, (index, scale, offset) in enumerate(zip(order, scales, offsets)):
            candidates = scores[row] >= self.min_score
            frame_boxes, frame_keypoints, _ = weighted_nms(boxes[row][candidates], keypoints[row][candidates],
                                                           scores[row][candidates], limit=self.max_faces)
            # Detector square -> image pixels.
            to_pixels = DETECTOR_SIZE * scale
            frame_boxes = frame_boxes * to_pixels + offset.repeat(2)
            frame_keypoints = frame_keypoints * to_pixels + offset
            rois[index] = self._rois_from_detections(frame_boxes, frame_keypoints)
        return rois

    @staticmethod
    def _rois_from_detections(boxes: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        """(cx, cy, side, angle) per face: 1.5x the long side, rotated to level the eyes (keypoints 0, 1)."""
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        side = (boxes[:, 2:] - boxes[:, :2]).max(dim=1).values * ROI_SCALE
        eyes = keypoints[:, 1] - keypoints[:, 0]
        angle = -torch.atan2(-eyes[:, 1], eyes[:, 0])
        angle = angle - 2 * math.pi * torch.floor((angle + math.pi) / (2 * math.pi))
        return torch.cat([centre, side[:, None], angle[:, None]], dim=1)

    @staticmethod
    def _to_image(local: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """ROI-local offsets [F, ..., 2] in [-0.5, 0.5] units -> image pixels (rotation about the centre)."""
        cos, sin = torch.cos(rois[:, 3]), torch.sin(rois[:, 3])
        shape = (-1,) + (1,) * (local.dim() - 2)
        x, y = local[..., 0] * rois[:, 2].view(shape), local[..., 1] * rois[:, 2].view(shape)
        return torch.stack([rois[:, 0].view(shape) + cos.view(shape) * x - sin.view(shape) * y,
                            rois[:, 1].view(shape) + sin.view(shape) * x + cos.view(shape) * y], dim=-1)

    def _roi_points(self, rois: torch.Tensor, size: int) -> torch.Tensor:
        """Image pixel coordinates of every output pixel of each ROI crop: [F, size, size, 2]."""
        local = _pixel_grid(size, self.device)[None] - 0.5
        return self._to_image(local.expand(len(rois), -1, -1, -1), rois)

    def _project(self, normalised: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """Mesh output in crop units [F, 468, 3] -> image pixels, z scaled like x."""
        xy = self._to_image(normalised[..., :2] - 0.5, rois)
        z = normalised[..., 2] * rois[:, 2:3]
        return torch.cat([xy, z[..., None]], dim=-1)

    def close(self) -> None:
        """Nothing to release (kept for the FaceMeshDetector interface)."""
