"""Named models in model directories, resolved safely.

A model named ``NAME`` is the pair ``NAME.safetensors`` + ``NAME.json`` in one
of the directories. Names come from service calls, so only plain names are
accepted: no path separators, no ``..``, nothing that resolves outside the
directory (symbolic links included).
"""

import re
from pathlib import Path

SHIPPED_MODEL_DIR = Path(__file__).resolve().parent / 'weights'
WEIGHTS_SUFFIX = '.safetensors'
_NAME_PATTERN = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$')


class ModelNameError(ValueError):
    """A model name that is unsafe or names no model in the directories."""


class ModelStore:
    """Look up models by name in an ordered list of directories (first wins)."""

    def __init__(self, directories):
        self.directories = [Path(d).expanduser().resolve() for d in directories if str(d)]

    def available(self) -> list[str]:
        names = set()
        for directory in self.directories:
            if directory.is_dir():
                names.update(p.name[:-len(WEIGHTS_SUFFIX)] for p in directory.glob(f'*{WEIGHTS_SUFFIX}')
                             if p.with_suffix('.json').is_file())
        return sorted(names)

    def resolve(self, name: str) -> Path:
        """Path of NAME.safetensors, or ModelNameError saying why not."""
        if not _NAME_PATTERN.match(name) or '..' in name:
            raise ModelNameError(
                f'invalid model name {name!r}: use a plain name (letters, digits, _ . + -), '
                'no path separators or ".."')
        for directory in self.directories:
            candidate = (directory / f'{name}{WEIGHTS_SUFFIX}').resolve()
            if candidate.parent != directory:
                raise ModelNameError(f'model {name!r} resolves outside {directory}; refused')
            if candidate.is_file():
                return candidate
        searched = ', '.join(str(d) for d in self.directories) or 'no directories'
        raise ModelNameError(f'no model named {name!r} in {searched}; available: {self.available()}')
