"""REP-155 (ROS4HRI) output with a real hri_msgs: ids and expressions of real faces on /humans/faces/...

hri_msgs is on no registry here: the fixture builds the stand-in hri_msgs in test/rep155_interfaces (written from REP-155)
with CMake into a temporary prefix; the emotion node and a listener run as processes that import it.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from fer_ros.nodes.rep155 import REP155_EXPRESSIONS
from fer_ros.nodes.ros_image import bgr_to_image_message
from fer_ros.run import stop
from model_fixtures import write_tiny_model

REPO = Path(__file__).resolve().parents[1]
LISTEN_S = 25.0


@pytest.fixture(scope='module')
def hri_prefix(tmp_path_factory):
    import rosidl_parser
    ros_prefix = str(Path(rosidl_parser.__file__).resolve().parents[4])
    build, install = tmp_path_factory.mktemp('hri_build'), tmp_path_factory.mktemp('hri_install')
    env = dict(os.environ)
    for variable in ('AMENT_PREFIX_PATH', 'CMAKE_PREFIX_PATH'):
        env[variable] = os.pathsep.join(p for p in (ros_prefix, env.get(variable)) if p)
    env['PATH'] = os.pathsep.join((str(Path(sys.executable).parent), env.get('PATH', '')))
    for command in (['cmake', '-S', str(REPO / 'test' / 'rep155_interfaces'), '-B', str(build),
                     f'-DCMAKE_INSTALL_PREFIX={install}', f'-DPython3_EXECUTABLE={sys.executable}',
                     '-DBUILD_TESTING=OFF', f'-DFER_ROS_CMAKE_DIR={REPO / "cmake"}'],
                    ['cmake', '--build', str(build), '-j', '2'], ['cmake', '--install', str(build)]):
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    return install


def hri_env(prefix: Path) -> dict:
    """Environment of a process that imports hri_msgs from the prefix (set before Python starts)."""
    env = dict(os.environ)
    site = prefix / 'lib' / f'python{sys.version_info.major}.{sys.version_info.minor}' / 'site-packages'
    env['PYTHONPATH'] = os.pathsep.join(p for p in (str(site), str(REPO), env.get('PYTHONPATH')) if p)
    env['LD_LIBRARY_PATH'] = os.pathsep.join(p for p in (str(prefix / 'lib'), env.get('LD_LIBRARY_PATH')) if p)
    return env


@pytest.mark.slow
def test_rep155_topics_carry_the_ids_and_expressions_of_real_faces(hri_prefix, samples_dir, tmp_path):
    write_tiny_model(tmp_path, 'tiny')
    env = hri_env(hri_prefix)
    node = subprocess.Popen([sys.executable, '-m', 'fer_ros.nodes.emotion_node', '--ros-args',
                             '-p', 'model:=tiny', '-p', f'model_dir:={tmp_path}', '-p', 'video_mode:=false',
                             '-p', 'image_topics:=[rep155_camera]', '-p', 'reliable:=true'],
                            env=env, stderr=(tmp_path / 'node.log').open('w'))
    listener = subprocess.Popen([sys.executable, str(REPO / 'test' / 'ros_helpers' / 'rep155_listener.py'),
                                 str(LISTEN_S)], env=env, stdout=subprocess.PIPE, text=True)
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        assert listener.stdout.readline().strip() == 'ready'
        camera = rclpy.create_node('rep155_camera', context=context)
        publisher = camera.create_publisher(Image, 'rep155_camera', QoSProfile(depth=10,
                                                                                reliability=ReliabilityPolicy.RELIABLE))
        deadline = time.monotonic() + 60
        while publisher.get_subscription_count() == 0:
            assert node.poll() is None and time.monotonic() < deadline, 'the emotion node did not subscribe'
            time.sleep(0.1)
        crowd = cv2.imread(str(samples_dir / 'multi_face.jpg'))
        for index in range(20):  # 0.1 s apart in message time (one track per face), 0.3 s in wall time
            header = Image().header
            header.stamp.sec, header.stamp.nanosec = 100 + index // 10, (index % 10) * 100_000_000
            publisher.publish(bgr_to_image_message(crowd, header))
            time.sleep(0.3)
        seen = json.loads(listener.communicate(timeout=LISTEN_S + 30)[0].splitlines()[-1])
    finally:
        rclpy.shutdown(context=context)
        stop([node])  # SIGINT, as fer-run stops its nodes; killed if it has not ended 10 s later
    node_log = (tmp_path / 'node.log').read_text()
    assert 'hri_msgs is not installed' not in node_log
    compared = 0
    for stamp, faces in seen['emotion'].items():
        if stamp not in seen['tracked']:
            continue
        assert sorted(seen['tracked'][stamp]) == sorted(face[0] for face in faces)
        for face_id, label, confidence, valence, arousal, (x, y, w, h) in faces:
            key = f'{face_id}@{stamp}'
            if key in seen['expression']:
                expression, rep_confidence, rep_valence, rep_arousal = seen['expression'][key]
                assert expression == REP155_EXPRESSIONS[label]
                assert rep_confidence == pytest.approx(confidence, abs=1e-6)
                assert (rep_valence, rep_arousal) == pytest.approx((valence, arousal), abs=1e-6)
                xmin, ymin, xmax, ymax = seen['roi'][key]
                assert (xmin, ymin, xmax, ymax) == pytest.approx(
                    (x / crowd.shape[1], y / crowd.shape[0], (x + w) / crowd.shape[1], (y + h) / crowd.shape[0]),
                    abs=1e-6)
                compared += 1
    assert compared >= 10, seen
    assert len({face for faces in seen['tracked'].values() for face in faces}) >= 3  # several people, own ids


def test_without_hri_msgs_the_node_says_so_and_serves_as_usual(tmp_path, capfd):
    from fer_ros.nodes.emotion_node import EmotionNode
    from rclpy.parameter import Parameter
    write_tiny_model(tmp_path, 'tiny')
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = EmotionNode(context=context, parameter_overrides=[Parameter('model', value='tiny'),
                                                                 Parameter('model_dir', value=str(tmp_path))])
        assert node.lifecycle_state == 'active' and not node.publishes_hri
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    assert 'hri_msgs is not installed' in capfd.readouterr().err


@pytest.mark.slow
def test_consumer_mode_answers_for_the_faces_another_detector_tracks_keeping_their_ids(hri_prefix, samples_dir,
                                                                                      tmp_path):
    env = hri_env(hri_prefix)
    # The node's log goes to a file: a pipe nobody reads until the end could fill and stall it.
    node = subprocess.Popen([sys.executable, '-m', 'fer_ros.nodes.hri_expression_node'], env=env,
                            stderr=(tmp_path / 'node.log').open('w'))
    try:
        time.sleep(2.0)
        role = subprocess.run([sys.executable, str(REPO / 'test' / 'ros_helpers' / 'hri_face_detect_role.py'),
                               str(samples_dir), '20'], env=env, capture_output=True, text=True, timeout=120)
        assert role.returncode == 0, role.stderr[-3000:]
    finally:
        stop([node])
    node_log = (tmp_path / 'node.log').read_text()
    seen = json.loads(role.stdout.splitlines()[-1])
    for face_id, expected in (('anna', 'happy'), ('bob', 'surprised')):
        answers = seen['answers'][face_id]
        assert len(answers) >= 10, (face_id, len(answers), node_log[-3000:])
        assert {stamp for stamp, _, _ in answers} <= set(seen['sent'][face_id])  # answers carry the crop's header
        expressions = [expression for _, expression, _ in answers]
        assert max(set(expressions), key=expressions.count) == expected, (face_id, expressions)
        assert all(0.0 < confidence <= 1.0 for _, _, confidence in answers)
