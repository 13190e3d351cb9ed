"""Shared dict round trip of the architecture configs stored in checkpoint JSON."""

from dataclasses import asdict, fields


class ConfigDict:
    """Mixin for config dataclasses: ``to_dict`` and a strict ``from_dict``."""

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, values):
        """Build from a dict; unknown keys raise ValueError, lists become tuples."""
        unknown = set(values) - {field.name for field in fields(cls)}
        if unknown:
            raise ValueError(f'unknown {cls.__name__} keys: {sorted(unknown)}')
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in values.items()})
