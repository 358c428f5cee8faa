"""Samples per second of paired-data synthesis (fairesi.data) vs a per-sample numpy loop.

The reference is the straightforward DeepSIF-loader-style implementation: for each
sample, copy the background window of all regions, paste the weighted spikes into the
patches, find each source's scale from sensor powers, project with the full lead field
(``G @ S``), add white noise channel by channel with numpy and normalise. It consumes the
same random draws as ours (taken from ``Synthesizer.raw``, outside the timed loop), so the
two clean sensor arrays are compared as a check. ``fairesi.data`` composes a whole batch
with torch ops, projects only the patch regions (the background projection is
precomputed) and draws the noise from a fused counter-based generator.

If ``fairesi.models.fair_esi`` is available, a FAIR-ESI training step at the CPU training
size (train preset 'cpu': SimMEG, batch 16, model preset 'cpu') is timed too, and the
synthesis of one such batch is given as a fraction of it.

Run: ``PYTHONPATH=python .venv/bin/python bench/bench_data.py [--batch 64] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from fairesi.data import SimConfig, Synthesizer
from fairesi.headmodel import HeadModel
from fairesi.simulate import WaveformBank


def load_head_model() -> HeadModel:
    try:
        return HeadModel.default()
    except Exception as err:  # the embedded model may not be built in this checkout
        print(f"default head model unavailable ({err}); using HeadModel.toy()")
        return HeadModel.toy()


def reference_samples(synth: Synthesizer, raw, rng: np.random.Generator) -> tuple[list, list]:
    """Per-sample numpy synthesis from the draws of ``raw``; returns (x, clean) lists."""
    cfg = synth.config
    gain = np.asarray(synth.lead_field.gain, dtype=np.float64)
    background = np.asarray(synth.bank.background)
    spikes = np.asarray(synth.bank.spikes)
    half = spikes.shape[1] // 2
    n_t = cfg.n_times
    t = np.arange(n_t)
    xs, cleans = [], []
    for b in range(raw.centres.shape[0]):
        start = int(raw.background_start[b])
        sources = background[:, start : start + n_t].astype(np.float64)
        patches = [raw.patch_regions[b, k].numpy() for k in range(cfg.n_sources)]
        patches = [p[p >= 0] for p in patches]
        outside = np.ones(synth.n_regions, bool)
        for p in patches:
            outside[p] = False
        sensor_background = gain[:, outside] @ sources[outside]
        sensor_background -= sensor_background.mean(axis=1, keepdims=True)
        for k, regions in enumerate(patches):
            spike = spikes[int(raw.spike_index[b, k])]
            spike = spike / spike.max()
            seg = np.clip(half - int(raw.peak_sample[b, k]) + t, 0, spikes.shape[1] - 1)
            weights = raw.patch_weights[b, k].numpy()[: len(regions)]
            unit = np.outer(weights, spike[seg])
            signal = gain[:, regions] @ unit
            signal -= signal.mean(axis=1, keepdims=True)
            window = np.abs(t - int(raw.peak_sample[b, k])) <= round(0.1 * synth.bank.sfreq)
            ps = np.square(signal[:, window]).sum()
            pn = np.square(sensor_background[:, window]).sum()
            alpha = np.sqrt(10 ** (float(raw.source_snr_db[b, k]) / 10) * pn / ps)
            sources[regions] = alpha * unit
        clean = gain @ sources
        noisy = np.empty_like(clean)
        for c in range(clean.shape[0]):
            power = np.mean(clean[c] ** 2) * 10 ** (-cfg.snr_db / 10)
            noisy[c] = clean[c] + rng.normal(0.0, np.sqrt(power), n_t)
        noisy -= noisy.mean(axis=1, keepdims=True)
        noisy -= noisy.mean(axis=0, keepdims=True)
        x = noisy / np.abs(noisy).max()
        target = np.zeros_like(sources)
        in_patch = ~outside
        target[in_patch] = sources[in_patch]
        target /= np.abs(target).max()
        xs.append(x.astype(np.float32))
        cleans.append(clean)
    return xs, cleans


def best_time(fn, repeats: int) -> tuple[float, float]:
    """Best wall-clock and best process CPU time (s) of ``repeats`` calls of ``fn``.

    The CPU time (all threads of this process) is the steadier figure on a shared machine.
    """
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return min(wall), min(cpu)


def training_step_time(
    head_model: HeadModel, synth_batch, repeats: int
) -> tuple[float, float] | None:
    try:
        from fairesi.models import build_model
    except ImportError:
        return None
    try:
        model = build_model("fair_esi", head_model, "meg", 500, preset="cpu")
    except (KeyError, ValueError, TypeError) as err:
        print(f"FAIR-ESI 'cpu' model unavailable ({err})")
        return None
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-5)

    def step() -> None:
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(synth_batch.x), synth_batch.target)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    return best_time(step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="samples per synthesis batch")
    parser.add_argument("--reference-samples", type=int, default=32, help="samples timed for numpy")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (best is kept)")
    args = parser.parse_args()

    head_model = load_head_model()
    bank = WaveformBank.synthetic(head_model.n_regions, n_spikes=5 * head_model.n_regions, seed=0)
    print(
        f"head model {head_model.name!r}: {head_model.n_regions} regions; synthetic bank; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor()}"
    )
    rows = []
    for name in ("SimMEG", "SimEEG"):
        cfg = SimConfig.preset(name, snr_db=5.0, n_sources=1, n_rings=2)
        synth = Synthesizer(head_model, bank, cfg, seed=0)
        index = torch.arange(args.batch)
        synth.batch("train", index[:2])  # compiles the noise kernel
        ours = best_time(lambda s=synth, i=index: s.batch("train", i), args.repeats)

        raw = synth.raw("train", index[: args.reference_samples])
        outputs = []
        reference = best_time(
            lambda s=synth, r=raw, o=outputs: o.append(
                reference_samples(s, r, np.random.default_rng(0))
            ),
            1,
        )
        clean = np.stack(outputs[0][1])
        error = np.abs(clean - raw.sensor_clean.double().numpy()).max() / np.abs(clean).max()
        rates = [args.batch / t for t in ours] + [args.reference_samples / t for t in reference]
        rows.append((name, synth.n_channels, cfg.n_times, *rates, error))

    print(
        f"\nCPU, batch {args.batch} (ours) vs per-sample numpy ({args.reference_samples} samples)"
    )
    print("samples per wall-clock second | samples per CPU second (all threads)")
    print(
        f"{'config':8} {'C x T':>9} {'ours':>7} {'numpy':>7} {'ratio':>6} | "
        f"{'ours':>7} {'numpy':>7} {'ratio':>6} | {'clean rel.err':>13}"
    )
    for name, n_c, n_t, ours, ours_cpu, ref, ref_cpu, error in rows:
        print(
            f"{name:8} {f'{n_c}x{n_t}':>9} {ours:7.0f} {ref:7.1f} {ours / ref:5.1f}x | "
            f"{ours_cpu:7.0f} {ref_cpu:7.1f} {ours_cpu / ref_cpu:5.1f}x | {error:13.1e}"
        )
    print("GPU (H100): not yet measured")

    cfg = SimConfig.preset("SimMEG", snr_db=5.0, n_sources=1, n_rings=2)
    synth = Synthesizer(head_model, bank, cfg, seed=0)
    index = torch.arange(16)
    batch = synth.batch("train", index)
    synthesis = best_time(lambda: synth.batch("train", index), args.repeats)
    step = training_step_time(head_model, batch, args.repeats)
    if step is None:
        print("FAIR-ESI training step: not measured (fairesi.models.fair_esi unavailable)")
        return
    print("\nSimMEG batch 16 (CPU training size): synthesis vs FAIR-ESI 'cpu' training step")
    for label, k in (("wall-clock", 0), ("CPU time", 1)):
        print(
            f"{label:10}: synthesis {synthesis[k] * 1e3:8.1f} ms, step {step[k] * 1e3:8.1f} ms, "
            f"synthesis = {100 * synthesis[k] / step[k]:.1f}% of a step (target < 20%)"
        )


if __name__ == "__main__":
    main()
