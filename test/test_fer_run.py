"""fer-run: the whole pipeline in separate processes (camera_source -> emotion_node -> emotion_echo)."""

import re
import subprocess
import sys

import pytest

from model_fixtures import write_tiny_model


@pytest.mark.slow
@pytest.mark.parametrize('video, faces', [('single_face.mp4', 1), ('no_face.mp4', 0)])
def test_fer_run_on_a_video_prints_every_result(samples_dir, tmp_path, video, faces):
    write_tiny_model(tmp_path, 'tiny')
    command = [sys.executable, '-m', 'fer_ros.run', '--source', str(samples_dir / video), '--echo',
               '--model', 'tiny', '--param', f'model_dir:={tmp_path}', '--drain', '2']
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = re.findall(r'^\[[\d.]+ camera\] (\d+) face\(s\)', run.stdout, flags=re.MULTILINE)
    assert len(results) >= 5, run.stdout[-3000:]
    summary = re.search(r'the source ended; (\d+) results on /emotion', run.stderr)
    assert summary and int(summary[1]) >= 5, run.stderr[-3000:]
    assert {int(n) for n in results} == {faces}
    if faces:
        assert re.search(r'face_\d+ \w+ [01]\.\d\d \(v [+-]\d\.\d\d a [+-]\d\.\d\d\) box', run.stdout)
