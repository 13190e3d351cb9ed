"""rosbag2 input and output with `rosbags` (sqlite3 and MCAP), no ROS installation needed.

Image frames come out as :class:`BagFrame` (stamp, frame id, bag time, the
raw CDR bytes for live replay, and the decoded BGR image or the reason it
could not be decoded). Every failure to open or read a bag is a
:class:`BagError` with a message that names the bag and the problem.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import Connection
from rosbags.rosbag2 import ReaderError, StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from fer_ros.resources import share_file
from fer_ros.vision.image_codec import (ImageDecodeError, bgr_to_compressed, bgr_to_raw, compressed_to_bgr,
                                        raw_to_bgr)

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
STRING = 'std_msgs/msg/String'
EMOTION_ARRAY = 'fer_ros/msg/EmotionArray'
INTERFACE_MESSAGES = ('EmotionStamped', 'EmotionArray', 'SelfCheckResult')


class BagError(RuntimeError):
    """A bag that cannot be read or written as asked."""


@dataclass
class BagFrame:
    index: int
    topic: str
    bag_time_ns: int
    stamp_ns: int
    frame_id: str
    msgtype: str
    raw: bytes
    image: np.ndarray | None
    error: str = ''


def interface_dir() -> Path:
    """The installed (or source) msg/ folder of fer_ros, for the bag schemas of our messages."""
    definition = share_file('msg/EmotionArray.msg')
    if not definition.is_file():
        raise BagError(f'fer_ros message definitions not found (last looked at {definition})')
    return definition.parent


def typestore():
    """ROS 2 Kilted types plus the fer_ros messages."""
    store = get_typestore(Stores.ROS2_KILTED)
    directory = interface_dir()
    types = {}
    for name in INTERFACE_MESSAGES:
        types.update(get_types_from_msg((directory / f'{name}.msg').read_text(), f'fer_ros/msg/{name}'))
    store.register(types)
    return store


def stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def decode_image(message, msgtype: str) -> np.ndarray:
    """BGR image of a deserialized Image or CompressedImage; ImageDecodeError on bad data."""
    if msgtype == COMPRESSED_IMAGE:
        return compressed_to_bgr(message.format, message.data)
    return raw_to_bgr(message.encoding, message.width, message.height, message.step, message.data,
                      bool(message.is_bigendian))


class BagReader:
    """Context manager over one rosbag2 bag (folder or .mcap/.db3 file)."""

    def __init__(self, path):
        self.path = Path(path)
        self._store = typestore()
        self._reader = None

    def __enter__(self):
        if not self.path.exists():
            raise BagError(f'bag {self.path} does not exist')
        try:
            self._reader = AnyReader([self.path], default_typestore=self._store)
            self._reader.open()
        except (AnyReaderError, ReaderError, OSError, ValueError, KeyError) as error:
            raise BagError(f'cannot open bag {self.path}: {error}') from error
        return self

    def __exit__(self, *exc):
        self._reader.close()

    @property
    def start_time_ns(self) -> int:
        return self._reader.start_time

    @property
    def end_time_ns(self) -> int:
        return self._reader.end_time

    @property
    def topics(self) -> dict[str, str]:
        """topic -> message type."""
        return {c.topic: c.msgtype for c in self._reader.connections}

    def connection(self, topic: str, msgtypes: tuple[str, ...]) -> Connection:
        matches = [c for c in self._reader.connections if c.topic == topic]
        if not matches:
            raise BagError(f'bag {self.path} has no topic {topic!r}; its topics: {self.topics}')
        if matches[0].msgtype not in msgtypes:
            raise BagError(f'topic {topic!r} in {self.path} has type {matches[0].msgtype}, expected one of {msgtypes}')
        return matches[0]

    def image_topics(self) -> list[str]:
        return sorted(t for t, msgtype in self.topics.items() if msgtype in IMAGE_TYPES)

    def messages(self, topic: str, msgtypes: tuple[str, ...]) -> Iterator[tuple[int, object, bytes]]:
        """(bag time, deserialized message, raw CDR) of one topic, in bag order."""
        connection = self.connection(topic, msgtypes)
        try:
            for _, bag_time, raw in self._reader.messages(connections=[connection]):
                yield bag_time, self._reader.deserialize(raw, connection.msgtype), bytes(raw)
        except (AnyReaderError, ReaderError, OSError, ValueError, KeyError) as error:
            raise BagError(f'cannot read {topic!r} from {self.path}: {error}') from error

    def frames(self, topic: str) -> Iterator[BagFrame]:
        """Every message of an image topic, decoded (or with the decode error)."""
        msgtype = self.connection(topic, IMAGE_TYPES).msgtype
        for index, (bag_time, message, raw) in enumerate(self.messages(topic, IMAGE_TYPES)):
            image, error = None, ''
            try:
                image = decode_image(message, msgtype)
            except ImageDecodeError as decode_error:
                error = str(decode_error)
            yield BagFrame(index, topic, bag_time, stamp_ns(message.header), message.header.frame_id, msgtype,
                           raw, image, error)


class BagWriter:
    """Write messages into a new rosbag2 bag (MCAP by default, or sqlite3)."""

    def __init__(self, path, storage: str = 'mcap'):
        self.path = Path(path)
        if storage not in ('mcap', 'sqlite3'):
            raise BagError(f'storage must be mcap or sqlite3, got {storage!r}')
        plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
        self.store = typestore()
        self._writer = Writer(self.path, version=9, storage_plugin=plugin)
        self._connections: dict[str, Connection] = {}

    def __enter__(self):
        if self.path.exists():
            raise BagError(f'output bag {self.path} exists already')
        try:
            self._writer.open()
        except (WriterError, OSError) as error:
            raise BagError(f'cannot create bag {self.path}: {error}') from error
        return self

    def __exit__(self, *exc):
        self._writer.close()

    def write_raw(self, topic: str, msgtype: str, time_ns: int, raw: bytes) -> None:
        """Write already serialized CDR bytes."""
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=self.store)
        self._writer.write(self._connections[topic], time_ns, raw)

    def write(self, topic: str, message, time_ns: int) -> None:
        self.write_raw(topic, message.__msgtype__, time_ns, bytes(self.store.serialize_cdr(message, message.__msgtype__)))

    # Message builders (rosbags classes, no rclpy needed).

    def header(self, time_ns: int, frame_id: str):
        types = self.store.types
        stamp = types['builtin_interfaces/msg/Time'](sec=time_ns // 1_000_000_000, nanosec=time_ns % 1_000_000_000)
        return types['std_msgs/msg/Header'](stamp=stamp, frame_id=frame_id)

    def image(self, bgr: np.ndarray, time_ns: int, frame_id: str, compressed: bool = False):
        header = self.header(time_ns, frame_id)
        if compressed:
            data = np.frombuffer(bgr_to_compressed(bgr, 'jpeg'), np.uint8)
            return self.store.types[COMPRESSED_IMAGE](header=header, format='jpeg', data=data)
        width, height, step, data = bgr_to_raw(bgr, 'bgr8')
        return self.store.types[IMAGE](header=header, height=height, width=width, encoding='bgr8', is_bigendian=0,
                                       step=step, data=np.frombuffer(data, np.uint8))

    def string(self, text: str):
        return self.store.types[STRING](data=text)
