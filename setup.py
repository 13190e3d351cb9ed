"""pip build of fer_ros: the Python package plus its ROS 2 interfaces.

``colcon build`` uses CMakeLists.txt directly (package.xml says ament_cmake).
For ``pip install .`` this script drives the same CMakeLists.txt against the
ROS 2 wheels on the build path, then places the results where a ROS prefix
expects them, with the Python environment's prefix as that ROS prefix:
the generated ``fer_ros.msg``/``fer_ros.srv`` modules and their extension
modules go into the Python package, the interface libraries into ``lib/``
(on the wheels' ``LD_LIBRARY_PATH``), and ``share/``, ``include/`` and the
node executables under ``lib/fer_ros`` as data files.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Distribution, find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PACKAGE = 'fer_ros'
PYTHON_LIB_DIR = ('lib', f'python{sys.version_info.major}.{sys.version_info.minor}')


def ros_prefix() -> Path:
    """The prefix holding the ROS 2 wheels' share/ (venv or pip build overlay)."""
    import rosidl_parser
    # <prefix>/lib/pythonX.Y/site-packages/rosidl_parser/__init__.py
    return Path(rosidl_parser.__file__).resolve().parents[4]


def run_cmake(build_dir: Path, install_dir: Path) -> None:
    """Configure, build and install the CMake project into install_dir."""
    prefix = str(ros_prefix())
    env = dict(os.environ)
    for var in ('AMENT_PREFIX_PATH', 'CMAKE_PREFIX_PATH'):
        env[var] = os.pathsep.join(p for p in (prefix, env.get(var, '')) if p)
    env['PATH'] = os.pathsep.join((str(Path(sys.executable).parent), env.get('PATH', '')))
    configure = [
        'cmake', '-S', str(ROOT), '-B', str(build_dir),
        f'-DCMAKE_INSTALL_PREFIX={install_dir}',
        f'-DPython3_EXECUTABLE={sys.executable}',
        '-DBUILD_TESTING=OFF',
        '-DCMAKE_BUILD_TYPE=Release',
    ]
    jobs = str(os.cpu_count() or 1)
    subprocess.run(configure, check=True, env=env)
    subprocess.run(['cmake', '--build', str(build_dir), '-j', jobs], check=True, env=env)
    if install_dir.exists():
        shutil.rmtree(install_dir)
    subprocess.run(['cmake', '--install', str(build_dir)], check=True, env=env)


class BuildWithInterfaces(build_py):
    """build_py that first builds the interfaces with CMake."""

    def run(self):
        build_dir = ROOT / 'build' / 'cmake'
        install_dir = ROOT / 'build' / 'cmake-install'
        run_cmake(build_dir, install_dir)
        super().run()
        self._copy_generated_python(install_dir.joinpath(*PYTHON_LIB_DIR, 'site-packages', PACKAGE))
        self.distribution.data_files = self._ros_prefix_files(install_dir)

    def _copy_generated_python(self, generated: Path) -> None:
        """Add the generated interface modules to the built Python package."""
        target = Path(self.build_lib) / PACKAGE
        for path in generated.rglob('*'):
            relative = path.relative_to(generated)
            is_source_file = (ROOT / PACKAGE / relative).exists()
            if path.is_dir() or is_source_file or '__pycache__' in relative.parts:
                continue
            if path.suffix in ('.py', '.so'):
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / relative)

    @staticmethod
    def _ros_prefix_files(install_dir: Path) -> list:
        """share/, include/ and lib/ (minus Python) of the CMake install as data files."""
        grouped = {}
        for path in sorted(install_dir.rglob('*')):
            relative = path.relative_to(install_dir)
            if path.is_dir() or relative.parts[:2] == PYTHON_LIB_DIR:
                continue
            grouped.setdefault(str(relative.parent), []).append(str(path))
        return sorted(grouped.items())


class BinaryDistribution(Distribution):
    """The wheel holds compiled interface modules: tag it for this platform."""

    def has_ext_modules(self):
        return True


setup(
    name=PACKAGE,
    version='0.1.0',
    description='Real-time facial expression recognition for ROS 2 robots',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=[PACKAGE, f'{PACKAGE}.*']),
    package_data={PACKAGE: ['weights/*.safetensors', 'weights/*.onnx', 'weights/*.json', 'weights/*.md', 'web/static/*']},
    distclass=BinaryDistribution,
    cmdclass={'build_py': BuildWithInterfaces},
    entry_points={'console_scripts': [
        'fer-run = fer_ros.run:main',
        'fer-emotion-node = fer_ros.nodes.emotion_node:main',
        'fer-hri-expression-node = fer_ros.nodes.hri_expression_node:main',
        'fer-camera-source = fer_ros.nodes.camera_source:main',
        'fer-emotion-echo = fer_ros.nodes.emotion_echo:main',
        'fer-web = fer_ros.nodes.web_view:main',
        'fer-train = fer_ros.training.train:cli',
        'fer-eval = fer_ros.training.evaluate:cli',
        'fer-kfold = fer_ros.training.kfold:cli',
        'fer-ablation = fer_ros.training.ablation:cli',
        'fer-compare = fer_ros.training.compare:cli',
        'fer-landmarks = fer_ros.data.landmarks:main',
        'fer-pack-faces = fer_ros.data.packed:main',
        'fer-export = fer_ros.model.export:main',
        'fer-fuse = fer_ros.training.fuse:cli',
        'fer-teacher-probs = fer_ros.training.teacher:cli',
        'fer-fused-kfold = fer_ros.training.fused_kfold:cli',
        'fer-make-bag = fer_ros.bag.make:main',
        'fer-bag-eval = fer_ros.bag.evaluate:main',
    ]},
)
