"""ROS 2 adapter: msg <-> numpy conversions, approximate-time synchronizer, inspection_node,
reject_gate, bag player and demo. See docs/ROS.md."""
