"""Silence known third-party noise on the process's stderr (file descriptor 2), pass everything else.

MediaPipe, TFLite and absl write C++ log lines straight to file descriptor 2
(``W0000 ... inference_feedback_manager.cc ...``) between the ROS log lines,
and no environment variable turns them off. :class:`StderrNoiseFilter` puts a
pipe in front of descriptor 2: lines matching :data:`KNOWN_NOISE` are dropped
(and counted), every other line, ROS logs and tracebacks included, goes to the
real stderr unchanged.
"""

import os
import re
import threading

# Messages MediaPipe 0.10.21's face mesh prints on every start and on the first face; harmless.
KNOWN_NOISE = (
    re.compile(rb'inference_feedback_manager\.cc:\d+\] Feedback manager requires a model with a single signature'),
    re.compile(rb'landmark_projection_calculator\.cc:\d+\] Using NORM_RECT without IMAGE_DIMENSIONS'),
    re.compile(rb'^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.'),
    re.compile(rb'^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR'),
)


class StderrNoiseFilter:
    """Context manager: from enter to exit, descriptor 2 goes through the filter."""

    def __init__(self, patterns=KNOWN_NOISE):
        self.patterns = patterns
        self.silenced = 0
        self._saved = None
        self._reader = None

    def __enter__(self):
        self._saved = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        self._reader = threading.Thread(target=self._forward, args=(read_end,), name='stderr_filter', daemon=True)
        self._reader.start()
        return self

    def __exit__(self, *exc):
        os.dup2(self._saved, 2)  # closes the pipe's last write end: the reader drains it and ends
        self._reader.join(timeout=5.0)
        os.close(self._saved)

    def _forward(self, read_end: int) -> None:
        with os.fdopen(read_end, 'rb', buffering=0) as pipe:
            pending = b''
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b'\n')
                for line in lines:
                    self._emit(line + b'\n')
            if pending:
                self._emit(pending)

    def _emit(self, line: bytes) -> None:
        if any(pattern.search(line) for pattern in self.patterns):
            self.silenced += 1
        else:
            while line:
                line = line[os.write(self._saved, line):]
