"""ROS users build fer_ros with colcon: build the package in a temporary workspace and use the result."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_FILES = ['package.xml', 'CMakeLists.txt', 'setup.py', 'pyproject.toml', 'README.md',
                 'resource', 'cmake', 'msg', 'srv', 'fer_ros', 'bin', 'launch', 'config', 'test']
# What `colcon test` runs here: tests that need neither sample media nor data sets (CI runs the rest).
COLCON_TEST_SELECTION = '-k "test_tracking or test_image_codec or test_native_stderr"'
PYTHON_DIR = f'python{sys.version_info.major}.{sys.version_info.minor}'

CHECK_SCRIPT = '''
import sys
from pathlib import Path

import fer_ros.msg
from fer_ros.msg import EmotionArray, EmotionStamped
from fer_ros.srv import RunSelfCheck, SwitchModel
from rclpy.serialization import deserialize_message, serialize_message

install = Path(sys.argv[1]).resolve()
module = Path(sys.modules[EmotionStamped.__module__].__file__).resolve()
assert install in module.parents, f'{module} is not from the colcon install space {install}'
message = EmotionArray(emotions=[EmotionStamped(label=EmotionStamped.HAPPY, confidence=0.5,
                                                labels=['happy'], probabilities=[0.5])])
message.header.frame_id = 'camera'
assert deserialize_message(serialize_message(message), EmotionArray) == message
assert SwitchModel.Request(model='x').model == 'x'
assert RunSelfCheck.Request(epsilons=[2.0]).epsilons[0] == 2.0
print('ok', module)
'''


def _copy_package(target: Path) -> None:
    target.mkdir(parents=True)
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc')
    for name in PACKAGE_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        elif source.exists():
            shutil.copy2(source, target / name)


@pytest.mark.slow
def test_colcon_build_in_a_fresh_workspace(tmp_path):
    colcon = Path(sys.executable).parent / 'colcon'
    if not colcon.exists():
        pytest.skip(f'colcon is not installed beside {sys.executable}: run scripts/setup.sh')
    workspace = tmp_path / 'ws'
    _copy_package(workspace / 'src' / 'fer_ros')
    env = dict(os.environ)
    # The ROS 2 wheels live in this environment's prefix: it is the underlay.
    for variable in ('AMENT_PREFIX_PATH', 'CMAKE_PREFIX_PATH'):
        env[variable] = os.pathsep.join(p for p in (sys.prefix, env.get(variable)) if p)
    env['PATH'] = os.pathsep.join((str(Path(sys.executable).parent), env.get('PATH', '')))
    build = subprocess.run(
        [str(colcon), 'build', '--event-handlers', 'console_direct-', '--cmake-args',
         f'-DPython3_EXECUTABLE={sys.executable}', '-DBUILD_TESTING=ON',
         f'-DFER_ROS_PYTEST_ARGS={COLCON_TEST_SELECTION}'],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=900)
    log = build.stdout + build.stderr
    assert build.returncode == 0, f'colcon build failed:\n{log[-6000:]}'
    assert 'Finished <<< fer_ros' in log

    install = workspace / 'install' / 'fer_ros'
    share = install / 'share' / 'fer_ros'
    for path in ['lib/fer_ros/emotion_node', 'lib/fer_ros/camera_source', 'lib/fer_ros/emotion_echo']:
        assert os.access(install / path, os.X_OK), f'{path} missing or not executable'
    for path in ['launch/emotion.launch.py', 'config/emotion.yaml', 'msg/EmotionStamped.msg',
                 'msg/EmotionArray.msg', 'srv/SwitchModel.srv', 'srv/RunSelfCheck.srv', 'package.xml']:
        assert (share / path).is_file(), f'share/fer_ros/{path} missing'
    index = install / 'share' / 'ament_index' / 'resource_index'
    assert (index / 'packages' / 'fer_ros').exists()
    interfaces = (index / 'rosidl_interfaces' / 'fer_ros').read_text().split()
    assert {'msg/EmotionStamped.msg', 'msg/EmotionArray.msg', 'srv/SwitchModel.srv'} <= set(interfaces)
    site_packages = install / 'lib' / PYTHON_DIR / 'site-packages'
    assert (site_packages / 'fer_ros' / 'nodes' / 'emotion_node.py').is_file()

    # What `source install/setup.bash` does for Python: the install space first.
    script = tmp_path / 'check_install.py'
    script.write_text(CHECK_SCRIPT)
    run_env = dict(env)
    run_env['PYTHONPATH'] = os.pathsep.join(p for p in (str(site_packages), env.get('PYTHONPATH')) if p)
    run_env['LD_LIBRARY_PATH'] = os.pathsep.join(p for p in (str(install / 'lib'), env.get('LD_LIBRARY_PATH')) if p)
    check = subprocess.run([sys.executable, str(script), str(install)], cwd=tmp_path, env=run_env,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith('ok')

    # `colcon test` runs the package's pytest suite (a selection here) and reports it.
    test = subprocess.run([str(colcon), 'test', '--event-handlers', 'console_direct-'], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=900)
    assert test.returncode == 0, (test.stdout + test.stderr)[-6000:]
    results = subprocess.run([str(colcon), 'test-result', '--all', '--verbose'], cwd=workspace, env=env,
                             capture_output=True, text=True, timeout=120)
    summary = results.stdout.strip().splitlines()[-1]
    tests, errors, failures = (int(n) for n in re.match(r'Summary: (\d+) tests?, (\d+) errors?, (\d+) failures?',
                                                         summary).groups())
    assert results.returncode == 0 and errors == 0 and failures == 0, results.stdout[-4000:]
    assert tests >= 10, summary
