"""The nodes' executor: a callback waiting for a pool thread does not keep the spinning thread busy, and
every callback still runs (real rclpy nodes, topics and executor)."""

import contextlib
import threading
import time

import pytest
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from std_msgs.msg import String

from fer_ros.nodes.entry import MultiThreadedExecutorWithoutBusyWait

BLOCK_S = 1.0


class CountingExecutor(MultiThreadedExecutorWithoutBusyWait):
    """Counts how often the spinning thread asks for ready work."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.waits = 0

    def wait_for_ready_callbacks(self, *args, **kwargs):
        self.waits += 1
        return super().wait_for_ready_callbacks(*args, **kwargs)


@pytest.fixture
def context():
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


@contextlib.contextmanager
def pool_held_by_a_slow_callback(name: str, executor, context):
    """A node spun by ``executor`` (one pool thread) whose timer callback holds that thread for BLOCK_S.

    Yields (a publisher to topic ``name``, the messages its subscription has received) once that callback
    runs and its timer is cancelled, so a message published now waits behind it for the pool thread.
    """
    node = Node(name, context=context)
    executor.add_node(node)
    blocking_started, received = threading.Event(), []

    def block():
        blocking_started.set()
        time.sleep(BLOCK_S)

    timer = node.create_timer(0.01, block, callback_group=MutuallyExclusiveCallbackGroup())
    node.create_subscription(String, name, lambda message: received.append(message.data), 10,
                             callback_group=MutuallyExclusiveCallbackGroup())
    publisher = node.create_publisher(String, name, 10)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        assert blocking_started.wait(30)
        timer.cancel()
        yield publisher, received
    finally:
        executor.shutdown()
        spinner.join(timeout=10)
        assert not spinner.is_alive()
        node.destroy_node()


@pytest.mark.filterwarnings('ignore:MultiThreadedExecutor is used with a single thread')  # one, to fill it
def test_a_callback_queued_behind_a_busy_pool_is_waited_for_not_polled(context):
    executor = CountingExecutor(num_threads=1, context=context)
    with pool_held_by_a_slow_callback('executor_test', executor, context) as (publisher, received):
        waits_before = executor.waits
        publisher.publish(String(data='queued'))  # its callback waits behind block() for the pool thread
        deadline = time.monotonic() + 30
        while not received:
            assert time.monotonic() < deadline, 'the queued callback never ran'
            time.sleep(0.01)
        # rclpy 9.1's MultiThreadedExecutor asks thousands of times in this second (ros2/rclpy#1452).
        assert executor.waits - waits_before < 100
        assert received == ['queued']


def test_an_exception_in_a_callback_reaches_spin(context):
    node = Node('executor_error_test', context=context)
    executor = MultiThreadedExecutorWithoutBusyWait(num_threads=2, context=context)
    executor.add_node(node)

    def fail():
        raise RuntimeError('callback failed')

    node.create_timer(0.01, fail)
    try:
        with pytest.raises(RuntimeError, match='callback failed'):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.1)
    finally:
        executor.shutdown()
        node.destroy_node()


@pytest.mark.filterwarnings('ignore:MultiThreadedExecutor is used with a single thread')
def test_shutdown_runs_the_callbacks_already_handed_to_the_pool_before_it_ends(context):
    executor = MultiThreadedExecutorWithoutBusyWait(num_threads=1, context=context)
    with pool_held_by_a_slow_callback('executor_shutdown_test', executor, context) as (publisher, received):
        publisher.publish(String(data='queued'))
        deadline = time.monotonic() + 30
        while len(executor._futures) < 2:  # block()'s task and the queued message's
            assert time.monotonic() < deadline, 'the message never reached the pool'
            time.sleep(0.01)
        executor.shutdown()
        assert received == ['queued']
        # rclpy 9.1 destroys its guard condition first: the queued task then failed with InvalidHandle
        # ("cannot use Destroyable because destruction was requested"), printed at exit as never retrieved.
        assert all(task.done() and task.exception() is None for task in executor._futures)
