"""The C++ Jansen-Rit simulator against independent references (numba, scipy)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.integrate import solve_ivp

from fairesi import _nmm
from fairesi.simulate import Connectome, JansenRitParams, simulate_network
from fairesi.simulate.jansen_rit import deepsif_noise_sigma
from fairesi.simulate.reference import philox4x32, simulate_network_reference


@pytest.fixture(scope="module")
def network() -> Connectome:
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(24, 3))
    xyz *= 70.0 / np.linalg.norm(xyz, axis=1, keepdims=True)
    return Connectome.from_geometry(xyz, k_nearest=4)


def _isolated() -> Connectome:
    return Connectome(sp.csr_matrix((1, 1)))


def _frequency_hz(x: np.ndarray, sfreq: float) -> float:
    """Mean frequency from interpolated upward crossings of the mean."""
    x = x - x.mean()
    up = np.nonzero((x[:-1] < 0) & (x[1:] >= 0))[0]
    crossings = up + x[up] / (x[up] - x[up + 1])
    return sfreq / float(np.mean(np.diff(crossings)))


def _jansen_rit_rhs(_t, y, p: JansenRitParams):
    def S(v):
        return 2 * p.nu_max / (1 + np.exp(p.r * (p.v0 - v)))

    a, b = p.a, p.b
    return [
        y[3],
        y[4],
        y[5],
        p.A * a * S(y[1] - y[2]) - 2 * a * y[3] - a * a * y[0],
        p.A * a * (p.mu + p.a_2 * p.J * S(p.a_1 * p.J * y[0])) - 2 * a * y[4] - a * a * y[1],
        p.B * b * p.a_4 * p.J * S(p.a_3 * p.J * y[0]) - 2 * b * y[5] - b * b * y[2],
    ]


def test_philox_known_answers():
    # Random123 known-answer vectors for philox4x32_10.
    cases = [
        ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
        ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
        (
            [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344],
            [0xA4093822, 0x299F31D0],
            [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1],
        ),
    ]
    for counter, key, expected in cases:
        assert list(_nmm.philox4x32(counter, key)) == expected
        assert [int(v) for v in philox4x32(*counter, *key)] == expected


@pytest.mark.parametrize(
    ("params", "expected_hz", "min_swing_mv"),
    [
        (JansenRitParams.deepsif(mu=0.22), 11.0, 2.0),  # DeepSIF's v0 = 6 mV
        (JansenRitParams.tvb(), 6.75, 8.0),  # TVB's v0 = 5.52 mV: large spike-like swings
    ],
)
def test_isolated_limit_cycle(params, expected_hz, min_swing_mv):
    y = simulate_network(_isolated(), 8.0, params=params, noise_sigma=0.0, transient_s=2.0)[0, 0]
    f_cpp = _frequency_hz(y, 500.0)
    # Independent reference: scipy's LSODA on the same single-region equations.
    t_ms = np.arange(0.0, 10000.0, 2.0)
    sol = solve_ivp(
        _jansen_rit_rhs,
        (0, 10000),
        np.zeros(6),
        t_eval=t_ms,
        args=(params,),
        method="LSODA",
        rtol=1e-9,
        atol=1e-12,
    )
    ref = (sol.y[1] - sol.y[2])[1000:]
    assert f_cpp == pytest.approx(_frequency_hz(ref, 500.0), rel=0.005)
    assert f_cpp == pytest.approx(expected_hz, rel=0.02)
    assert np.ptp(y) > min_swing_mv
    assert np.ptp(y) == pytest.approx(np.ptp(ref), rel=0.01)


def test_noise_free_matches_numba(network):
    A = np.full(network.n_regions, 3.25)
    A[[2, 11]] = 3.6
    kwargs = dict(
        n_runs=2,
        params=JansenRitParams.deepsif(mu=np.array([[0.12], [0.22]])),
        region_A=A,
        noise_sigma=0.0,
        transient_s=0.2,
    )
    for speed in (3.0, None):  # with and without conduction delays
        cpp = simulate_network(network, 1.5, conduction_speed_mm_per_ms=speed, **kwargs)
        ref = simulate_network_reference(network, 1.5, conduction_speed_mm_per_ms=speed, **kwargs)
        assert cpp.shape == ref.shape == (2, network.n_regions, 750)
        assert np.ptp(ref) > 1.0  # something actually happens
        np.testing.assert_allclose(cpp, ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())


def test_delays_change_the_dynamics(network):
    kw = dict(params=JansenRitParams.deepsif(mu=0.22), noise_sigma=0.0, transient_s=0.0)
    slow = simulate_network(network, 1.0, conduction_speed_mm_per_ms=1.0, **kw)
    none = simulate_network(network, 1.0, conduction_speed_mm_per_ms=None, **kw)
    assert not np.allclose(slow, none)


def test_noise_statistics_match_numba(network):
    kw = dict(n_runs=3, seed=7, noise_sigma=deepsif_noise_sigma(1.7), transient_s=0.5)
    cpp = simulate_network(network, 4.0, **kw).astype(np.float64)
    ref = simulate_network_reference(network, 4.0, **kw).astype(np.float64)
    # Increments remove the slow resting level and expose the noise-driven part.
    for x in (cpp, np.diff(cpp, axis=-1)):
        r = ref if x is cpp else np.diff(ref, axis=-1)
        assert x.mean() == pytest.approx(r.mean(), rel=0.02, abs=1e-3)
        assert x.std() == pytest.approx(r.std(), rel=0.02)
        skew_x = np.mean((x - x.mean()) ** 3) / x.std() ** 3
        skew_r = np.mean((r - r.mean()) ** 3) / r.std() ** 3
        assert skew_x == pytest.approx(skew_r, abs=0.05)
    # Same Philox stream: the first half second agrees sample by sample (the C++ uses its
    # own vectorised log/sin/cos, numba the libm ones, so only rounding differs).
    np.testing.assert_allclose(cpp[..., :250], ref[..., :250], rtol=1e-4, atol=1e-4)
    # Noise is really there and differs between runs.
    assert (
        np.diff(cpp, axis=-1).std()
        > 10
        * np.diff(simulate_network(network, 4.0, n_runs=1, noise_sigma=0.0), axis=-1)[
            :, :, 500:
        ].std()
    )
    assert not np.allclose(cpp[0], cpp[1])


def test_bit_identical_across_threads_and_batch_splits(network):
    kw = dict(seed=123, transient_s=0.1, region_A=np.linspace(3.25, 3.6, network.n_regions))
    full = simulate_network(network, 1.0, n_runs=4, n_threads=1, **kw)
    np.testing.assert_array_equal(full, simulate_network(network, 1.0, n_runs=4, n_threads=2, **kw))
    parts = [
        simulate_network(network, 1.0, n_runs=1, run_offset=0, n_threads=2, **kw),
        simulate_network(network, 1.0, n_runs=3, run_offset=1, n_threads=1, **kw),
    ]
    np.testing.assert_array_equal(full, np.concatenate(parts))
    # One run shared by 2 threads (region blocks) equals one thread.
    big = Connectome.from_geometry(np.random.default_rng(3).normal(size=(150, 3)) * 50)
    one = simulate_network(big, 0.3, n_runs=1, seed=5, n_threads=1, run_offset=9)
    two = simulate_network(big, 0.3, n_runs=1, seed=5, n_threads=2, run_offset=9)
    np.testing.assert_array_equal(one, two)
    three = simulate_network(big, 0.3, n_runs=1, seed=5, n_threads=3, run_offset=9)
    np.testing.assert_array_equal(one, three)  # 3 threads over 3 blocks of 64/64/22 regions
    assert not np.array_equal(one, simulate_network(big, 0.3, seed=6, n_threads=1, run_offset=9))


def test_output_sampling(network):
    y = simulate_network(network, 0.5, output_sfreq=250.0, noise_sigma=0.0, transient_s=0.0)
    y_fast = simulate_network(network, 0.5, output_sfreq=1000.0, noise_sigma=0.0, transient_s=0.0)
    assert y.shape[-1] == 125 and y_fast.shape[-1] == 500
    # Decimation: sample k at 250 Hz is sample 4k + 3 at 1 kHz (same time instant).
    np.testing.assert_array_equal(y, y_fast[..., 3::4])


def _raw_call(network, **overrides):
    R = network.n_regions
    w = network.weights
    args = dict(
        indptr=w.indptr.astype(np.int32),
        indices=w.indices.astype(np.int32),
        weights=w.data,
        delay_steps=None,
        params={
            n: np.full((1, R), v)
            for n, v in zip(
                _nmm.PARAM_NAMES,
                [3.25, 22, 0.1, 0.05, 6, 0.0025, 0.56, 135, 1, 0.8, 0.25, 0.25, 0.1, 0.0],
                strict=True,
            )
        },
        coupling={},
        n_runs=1,
        dt_ms=0.5,
        n_transient_steps=0,
        n_out=10,
        decimation=4,
        seed=0,
        run_offset=0,
        n_threads=1,
    )
    args.update(overrides)
    return _nmm.simulate(**args)


def test_bad_input_python(network):
    with pytest.raises(ValueError, match="dt_ms"):
        simulate_network(network, 1.0, dt_ms=float("nan"))
    with pytest.raises(ValueError, match="dt_ms"):
        simulate_network(network, 1.0, dt_ms=-0.5)
    with pytest.raises(ValueError, match="duration_s"):
        simulate_network(network, 0.0)
    with pytest.raises(ValueError, match="output_sfreq"):
        simulate_network(network, 1.0, output_sfreq=300.0)
    with pytest.raises(ValueError, match=r"'A'.*broadcast"):
        simulate_network(network, 1.0, region_A=np.ones(network.n_regions + 1))
    with pytest.raises(ValueError, match="unknown Jansen-Rit parameter.*'V0'"):
        simulate_network(network, 1.0, params={"V0": 6.0})
    with pytest.raises(ValueError, match="unknown Jansen-Rit parameter"):
        JansenRitParams.deepsif().replace(tau=3.0)
    with pytest.raises(ValueError, match="noise_sigma must be >= 0"):
        simulate_network(network, 1.0, noise_sigma=-1.0)
    with pytest.raises(ValueError, match="'mu' is not finite"):
        simulate_network(network, 1.0, params=JansenRitParams.deepsif(mu=float("nan")))
    with pytest.raises(ValueError, match="square"):
        Connectome(np.ones((3, 4)))
    with pytest.raises(ValueError, match="tract_lengths_mm has shape"):
        Connectome(np.ones((3, 3)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="conduction speed"):
        simulate_network(network, 1.0, conduction_speed_mm_per_ms=-3.0)
    with pytest.raises(TypeError, match="Connectome"):
        simulate_network(np.eye(3), 1.0)


def test_bad_input_cpp(network):
    R, nnz = network.n_regions, network.weights.nnz
    assert _raw_call(network).shape == (1, R, 10)
    with pytest.raises(ValueError, match="dt_ms"):
        _raw_call(network, dt_ms=float("nan"))
    with pytest.raises(ValueError, match="dt_ms"):
        _raw_call(network, dt_ms=-0.5)
    with pytest.raises(ValueError, match="unknown Jansen-Rit parameter 'tau'"):
        _raw_call(network, params={"tau": np.ones((1, R))})
    with pytest.raises(ValueError, match="missing parameter"):
        _raw_call(network, params={"A": np.ones((1, R))})
    bad_shape = {n: np.ones((1, R)) for n in _nmm.PARAM_NAMES}
    bad_shape["mu"] = np.ones((2, R))
    with pytest.raises(ValueError, match=r"'mu' must have shape \(n_runs, n_regions\)"):
        _raw_call(network, params=bad_shape)
    with pytest.raises(ValueError, match="indices must be 1-D of length"):
        _raw_call(network, indices=network.weights.indices[:-1].astype(np.int32))
    bad_idx = network.weights.indices.astype(np.int32)
    bad_idx[0] = R
    with pytest.raises(ValueError, match="column index"):
        _raw_call(network, indices=bad_idx)
    with pytest.raises(ValueError, match="delay at edge 0 is negative"):
        _raw_call(network, delay_steps=np.full(nnz, -1, dtype=np.int32))
    nan_w = network.weights.data.copy()
    nan_w[1] = np.nan
    with pytest.raises(ValueError, match="weight at edge 1 is not finite"):
        _raw_call(network, weights=nan_w)
    with pytest.raises(ValueError, match="unknown coupling parameter 'G'"):
        _raw_call(network, coupling={"G": 1.0})
    with pytest.raises(ValueError, match="decimation"):
        _raw_call(network, decimation=0)
