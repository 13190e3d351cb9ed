"""The launch file, the params file and the nodes agree (ROS 2 launch itself is not installable from pip)."""

import ast
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
import yaml

from fer_ros.nodes import camera_source, emotion_node, web_view

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / 'launch' / 'emotion.launch.py'


def _launch_calls(name: str) -> list[ast.Call]:
    tree = ast.parse(LAUNCH_FILE.read_text())
    return [node for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == name]


def _keywords(call: ast.Call) -> dict:
    return {k.arg: k.value for k in call.keywords}


def test_launch_nodes_are_installed_executables_of_this_package():
    nodes = _launch_calls('Node')
    assert len(nodes) == 3
    for call in nodes:
        keywords = _keywords(call)
        assert ast.literal_eval(keywords['package']) == 'fer_ros'
        executable = REPO / 'bin' / ast.literal_eval(keywords['executable'])
        assert os.access(executable, os.X_OK), f'{executable} missing or not executable'
        module = executable.read_text().split('from ')[1].split(' import')[0]
        assert module in ('fer_ros.nodes.emotion_node', 'fer_ros.nodes.camera_source', 'fer_ros.nodes.web_view')


def test_launch_arguments_default_to_the_node_defaults():
    arguments = {ast.literal_eval(call.args[0]): _keywords(call) for call in _launch_calls('DeclareLaunchArgument')}
    assert set(arguments) == {'params_file', 'image_topic', 'model', 'device', 'publish_annotated', 'source',
                              'namespace', 'autostart', 'web', 'dds_profile'}
    for name in ('model', 'device'):
        assert ast.literal_eval(arguments[name]['default_value']) == emotion_node.PARAMETERS[name][0]
    assert ast.literal_eval(arguments['publish_annotated']['default_value']) == 'false'
    assert ast.literal_eval(arguments['web']['default_value']) == 'false'
    autostart = emotion_node.PARAMETERS['autostart'][0]
    assert ast.literal_eval(arguments['autostart']['default_value']) == str(autostart).lower()
    assert all('description' in keywords for keywords in arguments.values())


def test_launch_gives_its_nodes_the_shipped_dds_profile_unless_one_is_set():
    setters = _launch_calls('SetEnvironmentVariable')
    assert [ast.literal_eval(call.args[0]) for call in setters] == ['FASTDDS_DEFAULT_PROFILES_FILE']
    assert ast.unparse(setters[0].args[1]) == "LaunchConfiguration('dds_profile')"
    default = _launch_calls('EnvironmentVariable')
    assert [ast.literal_eval(call.args[0]) for call in default] == ['FASTDDS_DEFAULT_PROFILES_FILE']
    assert "'fastdds_large_images.xml'" in ast.unparse(_keywords(default[0])['default_value'])
    assert (REPO / 'config' / 'fastdds_large_images.xml').is_file()
    tree = ast.parse(LAUNCH_FILE.read_text())
    description = next(node for node in ast.walk(tree) if isinstance(node, ast.Call)
                       and getattr(node.func, 'id', None) == 'LaunchDescription')
    # set before the nodes in the list, so every node process starts with it
    assert ast.unparse(description.args[0]).startswith('arguments + [dds_profile, emotion_node')


@pytest.mark.parametrize('node_name, module', [('emotion_node', emotion_node), ('camera_source', camera_source),
                                               ('web_view', web_view)])
def test_params_file_lists_every_parameter_with_its_default(node_name, module):
    params = yaml.safe_load((REPO / 'config' / 'emotion.yaml').read_text())[f'/**/{node_name}']['ros__parameters']
    assert set(params) == set(module.PARAMETERS)
    for name, (default, _) in module.PARAMETERS.items():
        assert params[name] == default, name


@pytest.mark.parametrize('module', [emotion_node, web_view])
def test_readme_documents_every_node_parameter(module):
    readme = (REPO / 'README.md').read_text()
    missing = [name for name in module.PARAMETERS if f'| `{name}` |' not in readme]
    assert not missing, f'README parameter table lacks {missing}'


@pytest.mark.parametrize('namespace', ['', 'robot1', 'lab/robot2'])
def test_params_file_reaches_the_node_in_any_namespace(tmp_path, namespace):
    params = yaml.safe_load((REPO / 'config' / 'emotion.yaml').read_text())
    params['/**/camera_source']['ros__parameters'].update(rate=12.5, frame_id='head_camera')
    params_file = tmp_path / 'params.yaml'
    params_file.write_text(yaml.safe_dump(params))
    (tmp_path / 'frames').mkdir()
    cv2.imwrite(str(tmp_path / 'frames' / 'a.png'), np.zeros((8, 8, 3), np.uint8))
    context = rclpy.Context()
    rclpy.init(context=context, args=['--ros-args', '--params-file', str(params_file),
                                      '-p', f'source:={tmp_path / "frames"}'])
    try:
        node = camera_source.CameraSource(context=context, namespace=namespace)
        assert node.get_fully_qualified_name() == f'/{namespace}/camera_source'.replace('//', '/')
        assert node.get_parameter('rate').value == 12.5
        assert node.get_parameter('frame_id').value == 'head_camera'
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
