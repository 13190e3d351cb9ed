"""The stderr filter drops MediaPipe's known noise written to descriptor 2 and passes everything else."""

import subprocess
import sys

SCRIPT = r'''
import os, sys
from fer_ros.nodes.native_stderr import StderrNoiseFilter
with StderrNoiseFilter() as noise:
    os.write(2, b"W0000 00:00:1.2 9 inference_feedback_manager.cc:114] Feedback manager requires a model with a single signature inference.\n")
    os.write(2, b"[ERROR] [1.0] [emotion_node]: a real problem\n")
    print("python traceback line", file=sys.stderr, flush=True)
    os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nno newline at the end")
print(f"silenced {noise.silenced}")
'''


def test_known_noise_is_dropped_and_other_lines_pass_in_order():
    run = subprocess.run([sys.executable, '-c', SCRIPT], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ('[ERROR] [1.0] [emotion_node]: a real problem\npython traceback line\n'
                          'no newline at the end')
    assert run.stdout.strip() == 'silenced 2'
