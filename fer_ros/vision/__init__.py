"""Camera-image handling, face detection, alignment and tracking; no ROS here."""
