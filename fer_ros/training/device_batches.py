"""Training batches held and augmented on the training device (``train.data_on_device``).

On a GPU, a DataLoader that augments each 48 px crop with OpenCV in worker
processes cannot keep up with the model; here the whole training set sits on
the device (FER-2013: 66 MB of uint8 crops) and each batch is augmented there
in one pass with :class:`FaceAugment`'s transform: horizontal flip (landmarks
mirrored), rotation and scale about the crop centre plus an integer shift (one
affine, applied with ``grid_sample``; the border is reflected), then random
erasing with uniform noise. Landmarks move with the image as in
:func:`fer_ros.data.augment.warp`. The order and the augmentation of an epoch
depend only on (seed, epoch), so a resumed run repeats them.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

from fer_ros.vision.mirror import MIRROR


class DeviceFaceBatches:
    """PreparedFaces on ``device``; :meth:`epoch` yields augmented batches like FaceDataset's, collated."""

    def __init__(self, faces, augment, device, batch_size):
        self.device = torch.device(device)
        self.images = torch.from_numpy(np.ascontiguousarray(faces.images)).to(self.device)
        self.landmarks = torch.from_numpy(np.ascontiguousarray(faces.landmarks, np.float32)).to(self.device)
        self.found = torch.from_numpy(np.asarray(faces.found, bool)).to(self.device)
        self.labels = torch.from_numpy(np.asarray(faces.labels, np.int64)).to(self.device)
        self.teacher = None if faces.teacher is None else torch.from_numpy(faces.teacher).to(self.device)
        self.mirror = torch.as_tensor(MIRROR, device=self.device)
        self.augment = augment
        self.batch_size = batch_size

    def __len__(self):
        return len(self.labels)

    def epoch(self, seed):
        """Shuffled full batches (the last partial one dropped), augmented with a generator seeded by ``seed``."""
        generator = torch.Generator(self.device).manual_seed(seed)
        order = torch.randperm(len(self), generator=generator, device=self.device)
        for begin in range(0, len(self) - self.batch_size + 1, self.batch_size):
            index = order[begin:begin + self.batch_size]
            images = self.images[index].float().div_(255.0).unsqueeze(1)
            landmarks = self.landmarks[index]
            if self.augment is not None:
                images, landmarks = self.augmented(images, landmarks, generator)
            batch = {'image': images, 'landmarks': landmarks, 'landmark_mask': self.found[index],
                     'label': self.labels[index]}
            if self.teacher is not None:
                batch['teacher'] = self.teacher[index]
            yield batch

    def augmented(self, images, landmarks, generator):
        """(images [B, 1, S, S], landmarks [B, N, 3]) flipped, warped and erased at random."""
        aug, batch, size = self.augment, images.shape[0], images.shape[-1]

        def uniform(low, high):
            return torch.rand(batch, generator=generator, device=self.device) * (high - low) + low

        flip = torch.rand(batch, generator=generator, device=self.device) < aug.flip_probability
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        mirrored = landmarks[:, self.mirror].clone()
        mirrored[..., 0] = (size - 1) / size - mirrored[..., 0]
        landmarks = torch.where(flip[:, None, None], mirrored, landmarks)
        matrices = self.random_matrices(uniform, batch, size, generator)
        images = self.warp(images, matrices)
        points = landmarks.clone()
        points[..., :2] = (landmarks[..., :2] * size) @ matrices[:, :, :2].transpose(1, 2) / size \
            + matrices[:, None, :, 2] / size
        points[..., 2] = landmarks[..., 2] * torch.linalg.det(matrices[:, :, :2]).abs().sqrt()[:, None]
        return self.erase(images, uniform, generator), points

    def random_matrices(self, uniform, batch, size, generator):
        """Pixel affines [B, 2, 3] as cv2.getRotationMatrix2D about the centre, plus an integer shift."""
        aug = self.augment
        angle = uniform(-aug.max_rotation_deg, aug.max_rotation_deg) * (math.pi / 180)
        scale = 1.0 + uniform(-aug.max_scale, aug.max_scale)
        alpha, beta = scale * torch.cos(angle), scale * torch.sin(angle)
        centre = size / 2
        shift = torch.randint(-aug.max_shift_px, aug.max_shift_px + 1, (batch, 2), generator=generator,
                              device=self.device).float()
        return torch.stack([
            torch.stack([alpha, beta, (1 - alpha) * centre - beta * centre + shift[:, 0]], dim=1),
            torch.stack([-beta, alpha, beta * centre + (1 - alpha) * centre + shift[:, 1]], dim=1)], dim=1)

    @staticmethod
    def warp(images, matrices):
        """cv2.warpAffine(image, matrix) for each image: output pixel q samples the input at matrix^-1 q."""
        size = images.shape[-1]
        inverse = torch.linalg.inv(torch.cat([matrices, matrices.new_tensor([0.0, 0.0, 1.0]).expand(
            len(matrices), 1, 3)], dim=1))[:, :2]
        # Normalised coordinates (align_corners=False): u = (2 p + 1) / S - 1, so p = ((u + 1) S - 1) / 2.
        to_pixels = matrices.new_tensor([[size / 2, 0.0, (size - 1) / 2], [0.0, size / 2, (size - 1) / 2],
                                         [0.0, 0.0, 1.0]])
        to_normalised = torch.linalg.inv(to_pixels)
        theta = to_normalised[:2] @ torch.cat([inverse, inverse.new_tensor([0.0, 0.0, 1.0]).expand(
            len(inverse), 1, 3)], dim=1) @ to_pixels
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode='bilinear', padding_mode='reflection', align_corners=False)

    def erase(self, images, uniform, generator):
        """Random erasing (Zhong et al.): per image with ``erase_probability``, one rectangle of uniform noise."""
        aug, batch, size = self.augment, images.shape[0], images.shape[-1]
        if not aug.erase_probability:
            return images
        erase = torch.rand(batch, generator=generator, device=self.device) < aug.erase_probability
        area = uniform(0.02, 0.15) * size * size
        ratio = torch.exp(uniform(math.log(0.3), math.log(3.3)))
        height = (area * ratio).sqrt().round().clamp(1, size)
        width = (area / ratio).sqrt().round().clamp(1, size)
        top = (torch.rand(batch, generator=generator, device=self.device) * (size - height + 1)).floor()
        left = (torch.rand(batch, generator=generator, device=self.device) * (size - width + 1)).floor()
        rows = torch.arange(size, device=self.device)[None, :, None]
        cols = torch.arange(size, device=self.device)[None, None, :]
        inside = ((rows >= top[:, None, None]) & (rows < (top + height)[:, None, None])
                  & (cols >= left[:, None, None]) & (cols < (left + width)[:, None, None]) & erase[:, None, None])
        noise = torch.randint(0, 256, images.shape, generator=generator, device=self.device).float() / 255.0
        return torch.where(inside[:, None], noise, images)
