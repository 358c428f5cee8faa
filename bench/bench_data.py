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


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def training_step_time(head_model: HeadModel, synth_batch, repeats: int) -> float | None:
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
        ours = args.batch / best_time(lambda s=synth, i=index: s.batch("train", i), args.repeats)

        raw = synth.raw("train", index[: args.reference_samples])
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        _, cleans = reference_samples(synth, raw, rng)
        reference = args.reference_samples / (time.perf_counter() - start)
        clean = np.stack(cleans)
        error = np.abs(clean - raw.sensor_clean.double().numpy()).max() / np.abs(clean).max()
        rows.append((name, synth.n_channels, cfg.n_times, ours, reference, error))

    print(
        f"\nCPU, batch {args.batch} (ours) vs per-sample numpy ({args.reference_samples} samples)"
    )
    print(
        f"{'config':8} {'C x T':>9} {'ours/s':>10} {'numpy/s':>10} {'ratio':>7} {'clean rel.err':>14}"
    )
    for name, n_c, n_t, ours, reference, error in rows:
        print(
            f"{name:8} {f'{n_c}x{n_t}':>9} {ours:10.0f} {reference:10.0f} "
            f"{ours / reference:6.1f}x {error:14.1e}"
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
    else:
        print(
            f"\nSimMEG batch 16: synthesis {synthesis * 1e3:.1f} ms, FAIR-ESI 'cpu' training "
            f"step {step * 1e3:.1f} ms, synthesis = {100 * synthesis / step:.1f}% of a step "
            "(target < 20%)"
        )


if __name__ == "__main__":
    main()
