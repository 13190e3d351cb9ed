"""fer_ros: facial expression recognition for ROS 2 robots.

The pure-Python code (model, vision, data) lives here; the interface types
generated from msg/ and srv/ (``fer_ros.msg``, ``fer_ros.srv``) are installed
into the same package by the CMake build.
"""

# The generated interface modules may sit in another ``fer_ros`` directory on
# sys.path (the installed package) while this source tree is imported first.
__path__ = __import__('pkgutil').extend_path(__path__, __name__)

__version__ = '0.1.0'
