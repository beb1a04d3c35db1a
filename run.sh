#!/usr/bin/env bash
# One entry point for a fresh machine. Each command first sets everything up (idempotent).
#   bash run.sh demo   # the inspection node on the bundled sample replay; prints what it published
#   bash run.sh test   # the whole test suite
set -eo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$root"
cmd=${1:-demo}
shift || true
bash tools/setup_env.sh
# shellcheck source=/dev/null
source tools/activate.sh
case "$cmd" in
  demo)
    # the bundled cell makes one product per stream: parts are compared in register too, and
    # a defect that one of the comparisons sees clearly is not averaged away by the others
    python -m zsg_iad_ros.ros.demo --bag zsg_iad_ros/resources/sample_replay \
      --reference zsg_iad_ros/resources/sample_reference --variation --fusion omnibus \
      --out outputs/demo "$@"
    ;;
  test)
    # pytest, not `python -m pytest`: the latter would put the source tree (without the generated
    # messages) ahead of the colcon overlay on sys.path.
    pytest test "$@"
    ;;
  *)
    echo "usage: bash run.sh demo|test [args...]" >&2
    exit 2
    ;;
esac
