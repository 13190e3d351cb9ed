"""A live Foxglove WebSocket server (foxglove-sdk) with the camera frames and the emotion results.

Topics keep their ROS names and shapes, so one layout (``config/foxglove_layout.json``) works live
and on recordings: the image as ``foxglove.CompressedImage`` (JPEG), the results as JSON with the
fields of ``fer_ros/msg/EmotionArray`` (``/emotion.emotions[0].valence`` is the same path in both).
"""

EMOTION_SCHEMA = {
    'title': 'fer_ros/msg/EmotionArray',
    'type': 'object',
    'properties': {
        'header': {'$ref': '#/$defs/header'},
        'emotions': {'type': 'array', 'items': {
            'type': 'object',
            'properties': {
                'header': {'$ref': '#/$defs/header'},
                'face_id': {'type': 'string'},
                'roi': {'type': 'object', 'properties': {
                    **{name: {'type': 'integer'} for name in ('x_offset', 'y_offset', 'height', 'width')},
                    'do_rectify': {'type': 'boolean'}}},
                'label': {'type': 'string'},
                'confidence': {'type': 'number'},
                'labels': {'type': 'array', 'items': {'type': 'string'}},
                'probabilities': {'type': 'array', 'items': {'type': 'number'}},
                'valence': {'type': 'number'},
                'arousal': {'type': 'number'},
                'model': {'type': 'string'},
            }}},
    },
    '$defs': {'header': {'type': 'object', 'properties': {
        'stamp': {'type': 'object', 'properties': {'sec': {'type': 'integer'}, 'nanosec': {'type': 'integer'}}},
        'frame_id': {'type': 'string'}}}},
}


def emotion_array_json(result: dict) -> dict:
    """The web view's result dict in the shape of fer_ros/msg/EmotionArray."""
    header = {'stamp': dict(result['stamp']), 'frame_id': result['frame_id']}
    return {'header': header, 'emotions': [
        {'header': header, 'face_id': face['face_id'],
         'roi': {**dict(zip(('x_offset', 'y_offset', 'width', 'height'), face['box'])), 'do_rectify': False},
         'label': face['label'], 'confidence': face['confidence'], 'labels': face['labels'],
         'probabilities': face['probabilities'], 'valence': face['valence'], 'arousal': face['arousal'],
         'model': face['model']}
        for face in result['faces']]}


class FoxgloveBridge:
    """Starts a Foxglove WebSocket server on host:port and logs frames and results to it."""

    def __init__(self, host: str, port: int, image_topic: str, emotion_topic: str, name: str = 'fer_ros'):
        try:
            import foxglove
            from foxglove.channels import CompressedImageChannel
        except ImportError as error:
            raise ValueError(f'foxglove is on but the foxglove-sdk package is missing ({error}): '
                             'pip install foxglove-sdk') from None
        self._context = foxglove.Context()
        self._image_channel = CompressedImageChannel(image_topic, context=self._context)
        self._emotion_channel = foxglove.Channel(emotion_topic, schema=EMOTION_SCHEMA, context=self._context)
        try:
            self._server = foxglove.start_server(name=name, host=host, port=port, context=self._context)
        except RuntimeError as error:  # the port is taken, the host unknown
            raise ValueError(f'cannot start the Foxglove server on {host}:{port}: {error}') from None

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def has_image_subscribers(self) -> bool:
        return self._image_channel.has_sinks()

    def log_image(self, stamp: dict, frame_id: str, jpeg: bytes) -> None:
        from foxglove.messages import CompressedImage, Timestamp
        self._image_channel.log(
            CompressedImage(timestamp=Timestamp(sec=stamp['sec'], nsec=stamp['nanosec']), frame_id=frame_id,
                            data=jpeg, format='jpeg'),
            log_time=stamp['sec'] * 1_000_000_000 + stamp['nanosec'])

    def log_emotion(self, result: dict) -> None:
        stamp = result['stamp']
        self._emotion_channel.log(emotion_array_json(result), log_time=stamp['sec'] * 1_000_000_000 + stamp['nanosec'])

    def stop(self) -> None:
        self._server.stop()
