"""Benchmark: TFLiteModel.predict (batched) vs one invoke() per sample, and Square-attack queries/s on the file.

Runs on the official MLCommons Tiny ResNet-8 float weights exported to int8 with our exporter, on the exact CIFAR-10
test images. Prints images/s of
  (a) a per-sample loop: set_tensor + invoke() + get_tensor per image on a raw LiteRT interpreter,
  (b) TFLiteModel.predict(x, batch_size=256) (quantize, batched invoke, dequantize),
  (c) the raw batched bound: a LiteRT interpreter resized to 256, pre-quantized inputs, invoke() only,
and the Square attack's queries/s against the file through (a) and (b), with the ratios side by side.
Goals (issue 6): (b)/(a) >= 2 and (c)/(b) <= 1.2.

Usage: .venv/bin/python bench/tflite_runner.py [--data ../shared/data] [--n 2048] [--threads 2] [--queries 100] [--attack-n 1017]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

import numpy as np

import qrobust_keras as qrk
from qrobust_keras.attacks.square import square
from qrobust_keras.export import TFLiteModel, export_tflite

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _goals import no_record_flag, record  # noqa: E402


def per_sample_fn(path, threads):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    s_in, z_in = inp["quantization"]
    s_out, z_out = out["quantization"]

    def predict(x):
        q = np.clip(np.round(np.asarray(x) / s_in) + z_in, -128, 127).astype(np.int8)
        rows = np.empty((len(q), out["shape"][-1]), np.float32)
        for i in range(len(q)):
            interp.set_tensor(inp["index"], q[i:i + 1])
            interp.invoke()
            rows[i] = (interp.get_tensor(out["index"])[0].astype(np.float32) - z_out) * s_out
        return rows

    return predict


CPU_TIMES: dict = {}


def best_of(fn, repeats=3, key=None):
    """Best wall time of ``repeats`` runs; the matching process CPU time (all threads) goes to CPU_TIMES[key].

    On a shared machine wall times are inflated by other processes; CPU seconds are not (they still include
    cache/memory contention), so both are printed.
    """
    times, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    if key:
        CPU_TIMES[key] = min(cpus)
    return min(times)


def main(argv=None):
    here = pathlib.Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(here.parent / "shared" / "data"))
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--attack-n", type=int, default=1017)
    args = ap.parse_args(no_record_flag(argv))
    data = pathlib.Path(args.data)
    x_cal, _ = qrk.data.read_pickle_batch(data / "cifar10" / "cifar-10-batches-py" / "data_batch_1")
    x_test, y_test = qrk.data.read_pickle_batch(data / "cifar10" / "cifar-10-batches-py" / "test_batch")
    x_cal = x_cal.astype(np.float32) / 255
    x_test = x_test.astype(np.float32) / 255
    model = qrk.models.load_mlcommons("resnet8", data / "models" / "mlcommons")
    path = pathlib.Path(tempfile.gettempdir()) / "qrobust_bench_mlcommons_resnet8_int8.tflite"
    info = export_tflite(model, path, x_cal[:500], fidelity_data=(x_test, y_test), overwrite=True)
    print(f"file: {path} ({info.size_bytes:,} bytes), agreement with Keras {info.agreement:.4f}, accuracy Keras "
          f"{info.accuracy_keras:.4f} / file {info.accuracy_tflite:.4f}")

    reps = int(np.ceil(args.n / len(x_test)))
    x = np.concatenate([x_test] * reps)[: args.n]
    tfl = TFLiteModel(path, num_threads=args.threads, batch_size=args.batch)
    loop = per_sample_fn(path, args.threads)
    tfl.predict(x[: args.batch])  # warm-up: builds the batch interpreter
    t_loop = best_of(lambda: loop(x), 2, "loop")
    t_batched = best_of(lambda: tfl.predict(x), 3, "batched")
    # raw batched bound: same interpreter class, inputs already quantized, invoke only
    from ai_edge_litert.interpreter import Interpreter

    raw = Interpreter(model_path=str(path), num_threads=args.threads)
    raw.resize_tensor_input(0, [args.batch, 32, 32, 3])
    raw.allocate_tensors()
    q = tfl.quantize_input(x)
    idx_in, idx_out = raw.get_input_details()[0]["index"], raw.get_output_details()[0]["index"]

    def raw_run():
        for s in range(0, len(q) - args.batch + 1, args.batch):
            raw.set_tensor(idx_in, q[s:s + args.batch])
            raw.invoke()
            raw.get_tensor(idx_out)

    full = (len(q) // args.batch) * args.batch
    t_raw = best_of(raw_run, 3, "raw") * len(q) / full
    CPU_TIMES["raw"] *= len(q) / full
    n = len(x)
    print(f"\nimages/s on {n} images, {args.threads} threads, batch {args.batch}:")
    print(f"  per-sample invoke loop      {n / t_loop:10.0f}  ({1e6 * t_loop / n:6.1f} us/image)")
    print(f"  TFLiteModel.predict batched {n / t_batched:10.0f}  ({1e6 * t_batched / n:6.1f} us/image)")
    print(f"  raw batched invoke bound    {n / t_raw:10.0f}  ({1e6 * t_raw / n:6.1f} us/image)")
    print(f"  speed-up batched / loop: {t_loop / t_batched:.2f}x (goal >= 2)   "
          f"bound / batched: {t_batched / t_raw:.2f}x (goal <= 1.2)")
    record("tflite_batched_vs_loop", t_loop / t_batched, f"MLCommons ResNet-8 int8, {args.threads} threads")
    record("tflite_bound_vs_batched", t_batched / t_raw, f"MLCommons ResNet-8 int8, {args.threads} threads")
    # The ceiling of any batched runner: if the interpreter itself gains less than 2x from batching on this CPU,
    # the 2x goal cannot be met by the Python side.
    print(f"  ceiling: raw batched bound / per-sample loop = {t_loop / t_raw:.2f}x")
    c = CPU_TIMES
    print(f"  CPU us/image (all threads): loop {1e6 * c['loop'] / n:.1f}, batched {1e6 * c['batched'] / n:.1f}, "
          f"raw bound {1e6 * c['raw'] / n:.1f}; CPU ratios loop/batched {c['loop'] / c['batched']:.2f}x, "
          f"batched/raw {c['batched'] / c['raw']:.2f}x")

    xa, ya = x_test[: args.attack_n], y_test[: args.attack_n]
    res = {}
    for name, fn in (("per-sample loop", loop), ("TFLiteModel batched", tfl)):
        t, c0 = time.perf_counter(), time.process_time()
        _, ainfo = square(fn, xa, ya, eps=8 / 255, queries=args.queries, batch_size=args.batch, seed=0, verbose=0,
                          return_info=True)
        dt, dc = time.perf_counter() - t, time.process_time() - c0
        res[name] = (int(ainfo.queries.sum()) / dt, float(np.mean(ainfo.success)), int(ainfo.queries.sum()) / dc)
    print(f"\nSquare attack (L-inf, eps 8/255, {args.queries} queries, {args.attack_n} images) against the file:")
    for name, (qps, succ, qpc) in res.items():
        print(f"  {name:22s} {qps:10.0f} queries/s   ({qpc:8.0f} per CPU second)   success {succ:.3f}")
    print(f"  speed-up: {res['TFLiteModel batched'][0] / res['per-sample loop'][0]:.2f}x   "
          f"bound / attack: {(n / t_raw) / res['TFLiteModel batched'][0]:.2f}x (wall), "
          f"{(n / CPU_TIMES['raw']) / res['TFLiteModel batched'][2]:.2f}x (CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
