"""The main() of the fer_ros nodes: init, spin until done or shut down, end cleanly."""

from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

from fer_ros.nodes.native_stderr import StderrNoiseFilter


def spin_with_threads(num_threads: int) -> Callable:
    """A spin step: the node on a MultiThreadedExecutor until shutdown."""
    def spin(node) -> None:
        executor = MultiThreadedExecutor(num_threads=num_threads)
        executor.add_node(node)
        executor.spin()
    return spin


def run_node(make_node, name: str, spin: Callable, args=None) -> int:
    """Run ``spin(make_node())``; exit code 1 with a FATAL line when the node cannot start (a ValueError:
    bad parameter, unknown or broken model, missing source). MediaPipe's known stderr noise is silenced."""
    with StderrNoiseFilter():
        rclpy.init(args=args)
        node = None
        try:
            node = make_node()
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
