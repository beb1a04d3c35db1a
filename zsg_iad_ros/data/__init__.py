"""Data: procedural tri-modal parts (`synthetic`), the zero-shot split protocol (`splits`),
real-sample loaders (`real`), ROS 2 bag writer/reader (`bags`, with `msgconv` for the
numpy <-> message field layouts) and the `zsg-generate` CLI (`cli`). See docs/DATA.md.

Submodules are imported on use, so `import zsg_iad_ros.data` stays light.
"""
