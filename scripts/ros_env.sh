# Sourced by the scripts: DDS stays on loopback, each run gets its own domain.
export ROS_LOCALHOST_ONLY=1
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 100 ))}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
