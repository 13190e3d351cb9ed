"""The live web view of the emotion node: an aiohttp server (HTTP + WebSocket) and its page.

Nothing here imports ROS: ``fer_ros.nodes.web_view`` subscribes to the topics,
turns messages into plain dicts and hands them to :class:`WebViewServer`.
"""
