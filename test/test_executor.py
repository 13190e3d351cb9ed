"""The nodes' executor: a callback waiting for a pool thread does not keep the spinning thread busy, and
every callback still runs (real rclpy nodes, topics and executor)."""

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


@pytest.mark.filterwarnings('ignore:MultiThreadedExecutor is used with a single thread')  # one, to fill it
def test_a_callback_queued_behind_a_busy_pool_is_waited_for_not_polled(context):
    node = Node('executor_test', context=context)
    executor = CountingExecutor(num_threads=1, context=context)
    executor.add_node(node)
    blocking_started, received = threading.Event(), []

    def block():  # holds the only pool thread
        blocking_started.set()
        time.sleep(BLOCK_S)

    timer = node.create_timer(0.01, block, callback_group=MutuallyExclusiveCallbackGroup())
    node.create_subscription(String, 'executor_test', lambda message: received.append(message.data), 10,
                             callback_group=MutuallyExclusiveCallbackGroup())
    publisher = node.create_publisher(String, 'executor_test', 10)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        assert blocking_started.wait(30)
        timer.cancel()
        waits_before = executor.waits
        publisher.publish(String(data='queued'))  # its callback waits behind block() for the pool thread
        deadline = time.monotonic() + 30
        while not received:
            assert time.monotonic() < deadline, 'the queued callback never ran'
            time.sleep(0.01)
        # rclpy 9.1's MultiThreadedExecutor asks thousands of times in this second (ros2/rclpy#1452).
        assert executor.waits - waits_before < 100
        assert received == ['queued']
    finally:
        executor.shutdown()
        spinner.join(timeout=10)
        node.destroy_node()


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
    node = Node('executor_shutdown_test', context=context)
    executor = MultiThreadedExecutorWithoutBusyWait(num_threads=1, context=context)
    executor.add_node(node)
    blocking_started, received = threading.Event(), []

    def block():  # holds the only pool thread while a message's callback queues behind it
        blocking_started.set()
        time.sleep(BLOCK_S)

    timer = node.create_timer(0.01, block, callback_group=MutuallyExclusiveCallbackGroup())
    node.create_subscription(String, 'executor_shutdown_test', lambda message: received.append(message.data),
                             10, callback_group=MutuallyExclusiveCallbackGroup())
    publisher = node.create_publisher(String, 'executor_shutdown_test', 10)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        assert blocking_started.wait(30)
        timer.cancel()
        publisher.publish(String(data='queued'))
        deadline = time.monotonic() + 30
        while len(executor._futures) < 2:  # block()'s task and the queued message's
            assert time.monotonic() < deadline, 'the message never reached the pool'
            time.sleep(0.01)
        executor.shutdown()
        spinner.join(timeout=10)
        assert not spinner.is_alive()
        assert received == ['queued']
        # rclpy 9.1 destroys its guard condition first: the queued task then failed with InvalidHandle
        # ("cannot use Destroyable because destruction was requested"), printed at exit as never retrieved.
        assert all(task.done() and task.exception() is None for task in executor._futures)
    finally:
        executor.shutdown()
        node.destroy_node()
