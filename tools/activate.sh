# Source me (bash): the venv, ROS 2 and this package's colcon overlay.
#   source tools/activate.sh [--no-overlay]
_zsg_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_zsg_venv=${ZSG_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/zsg_iad_ros/venv-$(printf %s "$_zsg_root" | sha1sum | cut -c1-10)}
# shellcheck source=/dev/null
source "$_zsg_venv/bin/activate"
if [ -z "${ROS_DISTRO:-}" ]; then
  # The venv is the ROS underlay; colcon drops prefixes without local_setup files.
  export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export RMW_IMPLEMENTATION=${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Idle OpenMP threads sleep instead of spinning: on a machine whose cores are shared (a ROS graph,
# other nodes, a CI runner) spinning threads slowed the CNN backbones several-fold.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
if [ "${1:-}" != "--no-overlay" ] && [ -f "$_zsg_root/install/setup.bash" ]; then
  # colcon's scripts reference unset variables.
  case $- in *u*) _zsg_u=1; set +u;; *) _zsg_u=0;; esac
  # shellcheck source=/dev/null
  source "$_zsg_root/install/setup.bash"
  [ $_zsg_u = 1 ] && set -u
fi
unset _zsg_root _zsg_venv _zsg_u
