"""Start the fer_ros emotion node, and optionally a camera_source for a video or folder and the web view.

  ros2 launch fer_ros emotion.launch.py image_topic:=/camera/color/image_raw
  ros2 launch fer_ros emotion.launch.py source:=/path/to/video.mp4 publish_annotated:=true
  ros2 launch fer_ros emotion.launch.py web:=true    # live page on http://127.0.0.1:8080/ (web_view in the params file)
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description():
    share = get_package_share_directory('fer_ros')
    default_params = os.path.join(share, 'config', 'emotion.yaml')
    # Camera frames through shared memory (config/fastdds_large_images.xml explains), unless the
    # environment names a Fast DDS profile already.
    default_dds_profile = EnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE', default_value=os.path.join(
        share, 'config', 'fastdds_large_images.xml'))
    arguments = [
        DeclareLaunchArgument('dds_profile', default_value=default_dds_profile,
                              description='Fast DDS profile (FASTDDS_DEFAULT_PROFILES_FILE) of the started nodes'),
        DeclareLaunchArgument('params_file', default_value=default_params,
                              description='ROS 2 parameters file for the nodes'),
        DeclareLaunchArgument('image_topic', default_value='image_raw',
                              description='camera topic (sensor_msgs/Image) the node reads'),
        DeclareLaunchArgument('model', default_value='cnn_se_gcn_fer2013',
                              description='model name in the model directories'),
        DeclareLaunchArgument('device', default_value='auto', description='auto, cpu or cuda'),
        DeclareLaunchArgument('publish_annotated', default_value='false',
                              description='publish emotion/image_annotated'),
        DeclareLaunchArgument('source', default_value='',
                              description='video file, image folder or camera index for a camera_source node'),
        DeclareLaunchArgument('namespace', default_value='', description='namespace of the nodes'),
        DeclareLaunchArgument('autostart', default_value='true',
                              description='bring the emotion node to active (false: leave it unconfigured for '
                                          'a lifecycle manager)'),
        DeclareLaunchArgument('web', default_value='false',
                              description='start the web_view node (live page; its host, port and allow_control '
                                          'come from the params file) and publish the annotated image it shows'),
    ]
    params_file = LaunchConfiguration('params_file')
    image_topic = LaunchConfiguration('image_topic')
    emotion_node = Node(
        package='fer_ros', executable='emotion_node', name='emotion_node', output='screen',
        namespace=LaunchConfiguration('namespace'),
        parameters=[params_file, {
            'model': LaunchConfiguration('model'),
            'device': LaunchConfiguration('device'),
            'publish_annotated': ParameterValue(PythonExpression([
                "'", LaunchConfiguration('publish_annotated'), "' == 'true' or '", LaunchConfiguration('web'),
                "' == 'true'"]), value_type=bool),
            'autostart': ParameterValue(LaunchConfiguration('autostart'), value_type=bool),
        }],
        remappings=[('image_raw', image_topic)],
    )
    camera_source = Node(
        package='fer_ros', executable='camera_source', name='camera_source', output='screen',
        namespace=LaunchConfiguration('namespace'),
        parameters=[params_file, {'source': LaunchConfiguration('source')}],
        remappings=[('image_raw', image_topic)],
        condition=IfCondition(PythonExpression(["'", LaunchConfiguration('source'), "' != ''"])),
    )
    web_view = Node(
        package='fer_ros', executable='web_view', name='web_view', output='screen',
        namespace=LaunchConfiguration('namespace'),
        parameters=[params_file],
        condition=IfCondition(LaunchConfiguration('web')),
    )
    dds_profile = SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE', LaunchConfiguration('dds_profile'))
    return LaunchDescription(arguments + [dds_profile, emotion_node, camera_source, web_view])
