"""Files fer_ros installs under share/fer_ros (params file, message definitions), wherever it was installed."""

import sys
from pathlib import Path


def share_file(relative: str) -> Path:
    """share/fer_ros/<relative> from the ament index, the pip prefix or the source tree, first found.

    When none has it, the source-tree path is returned; callers check that it exists.
    """
    candidates = [Path(sys.prefix) / 'share' / 'fer_ros', Path(__file__).resolve().parents[1]]
    try:
        from ament_index_python.packages import get_package_share_directory
        candidates.insert(0, Path(get_package_share_directory('fer_ros')))
    except (ImportError, LookupError, OSError, ValueError):  # no ament index (pip install)
        pass
    for share in candidates:
        if (share / relative).is_file():
            return share / relative
    return candidates[-1] / relative
