"""Ground-truth expression labels for the frames of a bag.

Two sources, usable together (the sidecar wins where both label a frame):

* a label topic in the bag (``std_msgs/String``): each message's text is the
  label from its bag time until the next label message; an empty text or
  ``none`` ends labelling;
* a sidecar file of time intervals, CSV with the header ``start,end,label`` or
  YAML (a list of ``{start: .., end: .., label: ..}``); ``start`` and ``end`` are
  seconds since the start of the bag, the interval is ``[start, end)``.

Frames are matched by their header stamp. Label names go through
:func:`fer_ros.labels.canonical_label` (``happiness``, ``surprise`` and the
like are accepted).
"""

import bisect
import csv
from dataclasses import dataclass
from pathlib import Path

import yaml

from fer_ros.labels import canonical_label

NO_LABEL = ('', 'none')


class LabelError(ValueError):
    """A label file or label topic that cannot be used."""


@dataclass(frozen=True)
class Interval:
    start_ns: int
    end_ns: int
    label: str


class FrameLabels:
    """Label lookup by time (ns), from intervals sorted by start."""

    def __init__(self, intervals: list[Interval]):
        self.intervals = sorted(intervals, key=lambda i: i.start_ns)
        self._starts = [i.start_ns for i in self.intervals]

    def __len__(self):
        return len(self.intervals)

    def label_at(self, time_ns: int) -> str | None:
        index = bisect.bisect_right(self._starts, time_ns) - 1
        if index >= 0 and time_ns < self.intervals[index].end_ns:
            return self.intervals[index].label
        return None


class LayeredLabels:
    """Several label sources; at each time the first source that has a label wins."""

    def __init__(self, *sources: FrameLabels):
        self.sources = list(sources)

    def __len__(self):
        return sum(len(source) for source in self.sources)

    def label_at(self, time_ns: int) -> str | None:
        for source in self.sources:
            label = source.label_at(time_ns)
            if label is not None:
                return label
        return None


def _label(text: str, where: str) -> str:
    try:
        return canonical_label(text)
    except ValueError as error:
        raise LabelError(f'{where}: {error}') from None


def _interval(row: dict, bag_start_ns: int, where: str) -> Interval:
    try:
        start, end = float(row['start']), float(row['end'])
    except (KeyError, TypeError, ValueError):
        raise LabelError(f'{where}: needs numeric start and end (seconds since the bag start), got {row}') from None
    if end <= start:
        raise LabelError(f'{where}: end {end} is not after start {start}')
    return Interval(bag_start_ns + round(start * 1e9), bag_start_ns + round(end * 1e9),
                    _label(str(row.get('label', '')), where))


def read_sidecar(path, bag_start_ns: int) -> FrameLabels:
    """Intervals from a CSV (start,end,label) or YAML list; times in seconds since the bag start."""
    path = Path(path)
    if not path.is_file():
        raise LabelError(f'label file {path} does not exist')
    if path.suffix.lower() in ('.yaml', '.yml'):
        rows = yaml.safe_load(path.read_text()) or []
        if not isinstance(rows, list):
            raise LabelError(f'{path}: expected a YAML list of {{start, end, label}}')
    else:
        with path.open(newline='') as file:
            rows = list(csv.DictReader(file))
        if rows and not {'start', 'end', 'label'} <= set(rows[0]):
            raise LabelError(f'{path}: CSV header must be start,end,label; got {list(rows[0])}')
    return FrameLabels([_interval(row, bag_start_ns, f'{path} entry {n + 1}') for n, row in enumerate(rows)])


def labels_from_topic(messages, end_ns: int) -> FrameLabels:
    """Intervals from (bag time ns, text) label messages; the last one lasts until end_ns."""
    messages = sorted(messages)
    intervals = []
    for (time_ns, text), following in zip(messages, messages[1:] + [(end_ns + 1, '')]):
        if text.strip().lower() not in NO_LABEL:
            intervals.append(Interval(time_ns, following[0], _label(text, f'label topic at {time_ns} ns')))
    return FrameLabels(intervals)


def write_sidecar_csv(path, intervals: list[tuple[float, float, str]]) -> None:
    """Write (start s, end s, label) intervals as the CSV that read_sidecar reads."""
    with Path(path).open('w', newline='') as file:
        writer = csv.writer(file)
        writer.writerow(['start', 'end', 'label'])
        for start, end, label in intervals:
            writer.writerow([f'{start:.6f}', f'{end:.6f}', label])
