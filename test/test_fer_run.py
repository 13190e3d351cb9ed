"""fer-run: the whole pipeline in separate processes (camera_source -> emotion_node -> emotion_echo)."""

import re
import subprocess
import sys

import pytest
import rclpy

from fer_ros.run import SIGINT_RECEIVED, InterruptibleExecutor, parse_args, web_view_params
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
    summary = re.search(r'the source ended; (\d+) results on /emotion \(emotion_node frames: (\d+) received, '
                        r'(\d+) answered, (\d+) skipped \(a newer frame came first\), (\d+) dropped', run.stderr)
    assert summary, run.stderr[-3000:]
    counted, received, answered, skipped, dropped = map(int, summary.groups())
    assert counted >= 5 and counted == answered
    assert received == answered + skipped + dropped and dropped == 0
    published = re.search(r'done after (\d+) frames', run.stderr)
    # Reliable QoS with 10 frames of history both ends: frames reach the node unless it stalls for a third
    # of a second (which a loaded CI machine can do), and the node accounts for every frame it received.
    assert published and 0.9 * int(published[1]) <= received <= int(published[1])
    assert {int(n) for n in results} == {faces}
    # MediaPipe's known start-up warnings are silenced; the ROS log lines stay.
    assert 'W0000' not in run.stderr and 'inference_feedback_manager' not in run.stderr, run.stderr[-3000:]
    assert '[emotion_node]: active: serving' in run.stderr
    if faces:
        assert re.search(r'face_\w+ \w+ [01]\.\d\d \(v [+-]\d\.\d\d a [+-]\d\.\d\d\) box', run.stdout)


def test_web_options_need_web_and_become_web_view_parameters(capsys):
    with pytest.raises(SystemExit) as refused:
        parse_args(['--allow-control'])
    assert refused.value.code == 2 and 'need --web' in capsys.readouterr().err
    args = parse_args(['--web', '--web-port', '9000', '--allow-control', '--foxglove', '--web-param', 'host:=0.0.0.0'])
    assert web_view_params(args) == ['port:=9000', 'allow_control:=true', 'foxglove:=true', 'host:=0.0.0.0']
    assert web_view_params(parse_args(['--web'])) == []


@pytest.mark.parametrize('after_sigint', [False, True])
def test_the_monitor_executor_turns_a_native_error_after_ctrl_c_into_keyboard_interrupt(after_sigint):
    """rclpy reports a KeyboardInterrupt raised inside its message conversion as a RuntimeError; fer-run's
    executor raises it as KeyboardInterrupt once a SIGINT came, and leaves every other RuntimeError as it is."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('fer_run_executor_test', context=context)
    executor = InterruptibleExecutor(context=context)
    executor.add_node(node)

    def native_error():
        raise RuntimeError('Unable to convert call argument 0 to Python object')

    node.create_timer(0.01, native_error)
    if after_sigint:
        SIGINT_RECEIVED.set()
    try:
        with pytest.raises(KeyboardInterrupt if after_sigint else RuntimeError):
            executor.spin_once(timeout_sec=5)
    finally:
        SIGINT_RECEIVED.clear()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
