"""The main() of the processing nodes: init, spin a multi-threaded executor, end cleanly."""

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

from fer_ros.nodes.native_stderr import StderrNoiseFilter


def run_node(make_node, name: str, num_threads: int, args=None) -> int:
    """Run ``make_node()`` until shutdown; exit code 1 with a FATAL line when it cannot start (a ValueError:
    bad parameter, unknown or broken model). MediaPipe's known stderr noise is silenced meanwhile."""
    with StderrNoiseFilter():
        rclpy.init(args=args)
        node = None
        try:
            node = make_node()
            executor = MultiThreadedExecutor(num_threads=num_threads)
            executor.add_node(node)
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        except ValueError as error:  # ModelNameError and ModelLoadError are ValueErrors too
            rclpy.logging.get_logger(name).fatal(f'cannot start: {error}')
            return 1
        finally:
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()
        return 0
