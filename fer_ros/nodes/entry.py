"""The main() of the fer_ros nodes: init, spin until done or shut down, end cleanly."""

import contextlib
from collections.abc import Callable

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

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


def spin_with_threads(num_threads: int) -> Callable:
    """A spin step: the node on a MultiThreadedExecutor until shutdown."""
    def spin(node) -> None:
        executor = MultiThreadedExecutor(num_threads=num_threads)
        executor.add_node(node)
        executor.spin()
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
