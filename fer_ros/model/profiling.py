"""Forward-pass latency of a model on random inputs (for benchmarks and comparison tables)."""

import time

import numpy as np
import torch


def forward_latency(model, batch_sizes=(1, 32), repeats=30) -> dict:
    """{batch: {batch_ms_median, face_ms_median, batch_ms_p95}} of model(images, landmarks) without grad."""
    size, landmarks = model.config.input_size, model.config.num_landmarks
    device = next(model.parameters()).device
    results = {}
    for batch in batch_sizes:
        images = torch.rand(batch, 1, size, size, device=device)
        points = 0.3 + 0.4 * torch.rand(batch, landmarks, 3, device=device) if model.uses_landmarks else None
        times = []
        with torch.no_grad():
            for index in range(repeats + 1):
                start = time.perf_counter()
                model(images, points)
                if device.type == 'cuda':
                    torch.cuda.synchronize()
                if index:  # the first pass is a warm-up
                    times.append(time.perf_counter() - start)
        median = 1e3 * float(np.median(times))
        results[batch] = {'batch_ms_median': median, 'face_ms_median': median / batch,
                          'batch_ms_p95': 1e3 * float(np.percentile(times, 95))}
    return results
