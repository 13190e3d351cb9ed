"""The runtime that serves a model: the compiled one (no PyTorch) on a CPU where it can, PyTorch otherwise."""
import ctypes
import os

from fer_ros.model.compiled import CompiledClassifier, CompiledUnavailable
from fer_ros.model.litert_face_mesh import LiteRTUnavailable


def cuda_available() -> bool:
    """Whether the CUDA driver reports a device (honouring ``CUDA_VISIBLE_DEVICES``), asked without PyTorch."""
    try:
        driver = ctypes.CDLL('libcuda.so.1')
    except OSError:
        return False
    count = ctypes.c_int(0)
    return driver.cuInit(0) == 0 and driver.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0


def load_classifier(model_path, device='auto', name=None, torchscript=True, compiled=True, num_threads=0,
                    cache_dir=None):
    """(classifier, notes) for a checkpoint: a :class:`CompiledClassifier` when ``compiled`` and the model
    runs on the CPU (``device`` cpu, or auto without CUDA) and can be compiled, else an
    :class:`~fer_ros.model.inference.ExpressionClassifier` (PyTorch, imported only then). ``notes`` say
    why a faster runtime was not used. ``num_threads``: 0 is one per core. ModelLoadError on a bad model.
    """
    notes = []
    threads = num_threads or os.cpu_count() or 1
    on_cpu = device == 'cpu' or (device == 'auto' and not cuda_available())
    if compiled and on_cpu:
        try:
            return CompiledClassifier(model_path, name=name, num_threads=threads, cache_dir=cache_dir), notes
        except (CompiledUnavailable, LiteRTUnavailable) as error:
            notes.append(f'runs in PyTorch, not compiled: {error}')
    import torch

    from fer_ros.model.inference import ExpressionClassifier
    if num_threads:
        torch.set_num_threads(num_threads)
    classifier = ExpressionClassifier(model_path, device=device, name=name, torchscript=torchscript)
    if classifier.trace_error:
        notes.append(f'runs eagerly, TorchScript could not trace it: {classifier.trace_error}')
    return classifier, notes
