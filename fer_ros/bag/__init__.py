"""Rosbag tools: labelled evaluation bags, offline and live replay, metric reports."""
