"""The main() of the fer_ros nodes: init, spin until done or shut down, end cleanly."""

import contextlib
import threading
from collections.abc import Callable

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.executors import (ConditionReachedException, ExternalShutdownException, MultiThreadedExecutor,
                             ShutdownException, TimeoutException)

from fer_ros.nodes.native_stderr import StderrNoiseFilter


def parameter_descriptor(description: str, read_only: bool, value_range=None) -> ParameterDescriptor:
    """A parameter's descriptor: its description (saying when it is read-only) and its (low, high) range."""
    descriptor = ParameterDescriptor(description=description + (' (read-only at run time)' if read_only else ''),
                                     read_only=read_only)
    if value_range is not None:
        low, high = value_range
        if isinstance(low, int):
            descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=1)]
        else:
            descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high, step=0.0)]
    return descriptor


@contextlib.contextmanager
def unless_shut_down(context):
    """Drop an error raised in the block once ``context`` is shut down (Ctrl-C while a callback or worker
    thread was publishing: the executor that would report it has stopped); re-raise any other."""
    try:
        yield
    except Exception:
        if context.ok():
            raise


class MultiThreadedExecutorWithoutBusyWait(MultiThreadedExecutor):
    """rclpy's MultiThreadedExecutor, handing each callback over only once a pool thread has taken it.

    rclpy 9.1 (Kilted) yields a task again while it waits in the thread pool's queue and then does not
    wait: the spinning thread loops on the same task, holding the GIL, until a pool thread starts it
    (ros2/rclpy#1452, fixed upstream after 9.1). Under load that loop took three quarters of a core
    in the emotion node and starved its pool threads and frame worker of the GIL. Here the spinning
    thread blocks until the pool has started the callback it submitted.
    """

    HANDOVER_POLL_S = 0.05  # how often a blocked hand-over checks for shutdown

    def _spin_once_impl(self, timeout_sec=None, wait_condition=lambda: False) -> None:
        try:
            handler, _, _ = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except (ExternalShutdownException, ShutdownException, TimeoutException, ConditionReachedException):
            return
        started = threading.Event()

        def start() -> None:
            started.set()
            handler()

        try:
            self._executor.submit(start)
        except RuntimeError:  # the pool was shut down after the wait above returned
            if self._is_shutdown:
                return
            raise
        self._futures.append(handler)
        for future in self._futures[:]:
            if future.done():
                self._futures.remove(future)
                future.result()  # raise any exception of a callback, as MultiThreadedExecutor does
        while not started.wait(self.HANDOVER_POLL_S) and self._context.ok() and not self._is_shutdown:
            pass

    def shutdown(self, timeout_sec: float | None = None, *, wait_for_threads: bool = True) -> bool:
        """Stop taking work, let the pool finish the callbacks handed to it, then release the executor.

        rclpy 9.1 destroys its guard condition before the pool's callbacks end; a callback that starts
        after that fails on the destroyed guard (InvalidHandle, printed at exit as never retrieved) and
        its message is lost. ``timeout_sec`` is not honoured while the pool drains, as in rclpy 9.1.
        """
        with self._shutdown_lock:
            if not self._is_shutdown:
                self._is_shutdown = True
                if self._guard:
                    self._guard.trigger()
        self._executor.shutdown(wait=wait_for_threads)
        return super().shutdown(timeout_sec, wait_for_threads=wait_for_threads)


def spin_with_threads(num_threads: int) -> Callable:
    """A spin step: the node on a thread-pool executor until shutdown; the callbacks under way end before
    the node is destroyed."""
    def spin(node) -> None:
        executor = MultiThreadedExecutorWithoutBusyWait(num_threads=num_threads)
        executor.add_node(node)
        try:
            executor.spin()
        finally:
            executor.shutdown()
    return spin


def run_node(make_node, name: str, spin: Callable, args=None) -> int:
    """Run ``spin(make_node())``; exit code 1 with a FATAL line when the node cannot start (a ValueError:
    bad parameter, unknown or broken model, missing source). What spin raises once Ctrl-C has shut the
    context down ends the node quietly. MediaPipe's known stderr noise is silenced."""
    with StderrNoiseFilter():
        rclpy.init(args=args)
        node = None
        try:
            node = make_node()
            with unless_shut_down(node.context):  # an executor woken mid-callback by Ctrl-C
                spin(node)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        except ValueError as error:  # ModelNameError, ModelLoadError and FrameSourceError are ValueErrors too
            rclpy.logging.get_logger(name).fatal(f'cannot start: {error}')
            return 1
        finally:
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()
        return 0
