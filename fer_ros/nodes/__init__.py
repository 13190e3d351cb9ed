"""rclpy nodes: thin glue between ROS topics and the ROS-free pipeline."""
