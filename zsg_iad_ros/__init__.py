"""zsg_iad_ros: zero-shot, grounded, multimodal industrial anomaly detection for ROS 2."""
# Run from the source tree (`python -m zsg_iad_ros...` in the repository root), this package
# would hide the colcon-installed one that carries the generated messages (`zsg_iad_ros.msg`);
# extending the search path to every `zsg_iad_ros` folder on sys.path finds both.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
