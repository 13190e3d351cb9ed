"""What every classifier of a checkpoint shares, PyTorch or not: its name, labels, input checks, warm-up."""
from pathlib import Path

import numpy as np

from fer_ros.model.metadata import ModelLoadError


class CheckpointClassifier:
    """A checkpoint that classifies batches of aligned crops; subclasses implement :meth:`predict`.

    ``name``: what results call the model; by default the name it was loaded
    as (the checkpoint file's stem), never a value read from the file.
    """

    def __init__(self, model_path, metadata: dict, name, input_size: int, num_landmarks: int):
        self._metadata = metadata
        self._name = name or Path(model_path).with_suffix('').name
        self.input_size, self.num_landmarks = int(input_size), int(num_landmarks)

    @property
    def labels(self):
        """Class names, in logit order."""
        return tuple(self._metadata['labels'])

    @property
    def name(self):
        return self._name

    @property
    def metadata(self):
        return dict(self._metadata)

    def _checked_crops(self, crops) -> np.ndarray:
        """``crops`` as uint8 [N, S, S]; ValueError for another shape."""
        crops = np.asarray(crops)
        size = self.input_size
        if crops.ndim != 3 or crops.shape[1:] != (size, size):
            raise ValueError(f'crops must be [N, {size}, {size}], got {crops.shape}')
        return crops

    def predict(self, crops, landmarks=None) -> np.ndarray:
        raise NotImplementedError

    def warm_up(self) -> None:
        """One forward pass on a blank face, so the first real face is not slowed by lazy initialisation;
        ModelLoadError when it does not answer finite probabilities."""
        size = self.input_size
        try:
            probabilities = self.predict(np.zeros((1, size, size), np.uint8),
                                         np.full((1, self.num_landmarks, 3), 0.5, np.float32))
        except RuntimeError as error:
            raise ModelLoadError(f'model {self.name!r} loads but cannot run: {error}') from error
        if not np.isfinite(probabilities).all():
            raise ModelLoadError(f'model {self.name!r} answers non-finite probabilities {probabilities[0]}')
