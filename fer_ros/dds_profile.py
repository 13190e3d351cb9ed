"""The Fast DDS profile fer_ros starts its processes with: camera frames through shared memory.

Fast DDS's default shared-memory segment (512 KB) is smaller than one
640x480 colour frame, which then travels over UDP loopback in fragments
(about 17 ms instead of 4 ms per frame on 2 cores, benchmarks/bench_node.py).
``config/fastdds_large_images.xml`` gives each participant a 16 MB segment.
"""
import os
from pathlib import Path

from fer_ros.resources import share_file

PROFILE_VARIABLE = 'FASTDDS_DEFAULT_PROFILES_FILE'


def large_image_profile() -> Path:
    """The shipped Fast DDS profile (share/fer_ros/config/fastdds_large_images.xml)."""
    return share_file('config/fastdds_large_images.xml')


def use_large_image_profile(environ=os.environ) -> str:
    """Point Fast DDS (this process and the ones it starts) at the shipped profile unless ``environ``
    names a profile already; an empty value means Fast DDS's defaults and is removed. Returns the
    profile in effect ('' for the defaults)."""
    if PROFILE_VARIABLE not in environ:
        environ[PROFILE_VARIABLE] = str(large_image_profile())
    elif not environ[PROFILE_VARIABLE]:
        del environ[PROFILE_VARIABLE]
        return ''
    return environ[PROFILE_VARIABLE]
