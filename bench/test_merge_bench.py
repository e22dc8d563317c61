"""pytest-benchmark: one 4096 x 2048 bf16 tensor merged by llamix's kernels and by mergekit's own
torch functions (the per-tensor work of each method), after checking the answers agree.

    pytest bench/test_merge_bench.py --benchmark-group-by=group
"""
from __future__ import annotations

import numpy as np
import pytest

import llamix
from llamix.merge import kernels as K

torch = pytest.importorskip("torch")
pytest.importorskip("mergekit")

SHAPE = (4096, 2048)


def bf16(x: np.ndarray) -> np.ndarray:
    return K.scale(x.astype(np.float32), out="bfloat16")


@pytest.fixture(scope="module")
def tensors():
    rng = np.random.default_rng(0)
    base = rng.standard_normal(SHAPE, dtype=np.float32) * 0.02
    fts = [base + 0.002 * rng.standard_normal(SHAPE, dtype=np.float32) for _ in range(2)]
    b = bf16(base)
    xs = [bf16(f) for f in fts]
    tb = torch.from_numpy(b.astype(np.int16)).view(torch.bfloat16)
    txs = [torch.from_numpy(x.astype(np.int16)).view(torch.bfloat16) for x in xs]
    llamix.set_threads(0)
    torch.set_num_threads(llamix.cpu_info()["threads"])
    return b, xs, tb, txs


def as_f32(t) -> np.ndarray:
    return t.float().numpy()


def bits_to_f32(u16) -> np.ndarray:
    return (u16.astype(np.uint32) << 16).view(np.float32)


def mk_linear(txs, w):
    acc = torch.zeros(txs[0].shape, dtype=torch.float32)
    for t, wi in zip(txs, w):
        acc.addcmul_(t, torch.tensor(wi, dtype=torch.float32))
    return (acc / sum(torch.tensor(w, dtype=torch.float32))).to(torch.bfloat16)


def mk_ties(tb, txs, w, density):
    from mergekit.merge_methods.generalized_task_arithmetic import get_mask
    from mergekit.sparsify import magnitude
    deltas = torch.stack([magnitude(x - tb, density) for x in txs])
    weights = torch.tensor(w, dtype=deltas.dtype).reshape(-1, 1, 1)
    deltas = deltas * weights
    mask = get_mask(deltas, "sum", deltas.dtype)
    mixed = (deltas * mask).sum(0)
    div = (weights * mask).sum(0)
    div[div == 0] = 1
    return (tb + mixed / div).to(torch.bfloat16)


@pytest.mark.benchmark(group="linear")
def test_linear_llamix(benchmark, tensors):
    b, xs, tb, txs = tensors
    out = benchmark(K.linear, [b] + xs, [0.4, 0.3, 0.3], True, "bfloat16", "bfloat16")
    np.testing.assert_array_equal(bits_to_f32(out), as_f32(mk_linear([tb] + txs, [0.4, 0.3, 0.3])))


@pytest.mark.benchmark(group="linear")
def test_linear_mergekit(benchmark, tensors):
    _, _, tb, txs = tensors
    benchmark(mk_linear, [tb] + txs, [0.4, 0.3, 0.3])


@pytest.mark.benchmark(group="slerp")
def test_slerp_llamix(benchmark, tensors):
    from mergekit.merge_methods.slerp import slerp
    b, xs, tb, txs = tensors
    out = benchmark(K.slerp, b, xs[0], 0.3, "bfloat16", "bfloat16")
    want = as_f32(slerp(torch.tensor([0.3]), tb[None], txs[0][None])[0].to(torch.bfloat16))
    ulp = np.spacing(np.maximum(np.abs(want), np.abs(bits_to_f32(b)))) * 2.0 ** 16
    assert np.max(np.abs(bits_to_f32(out) - want) / ulp) <= 2


@pytest.mark.benchmark(group="slerp")
def test_slerp_mergekit(benchmark, tensors):
    from mergekit.merge_methods.slerp import slerp
    _, _, tb, txs = tensors
    benchmark(lambda: slerp(torch.tensor([0.3]), tb[None], txs[0][None]))


@pytest.mark.benchmark(group="ties")
def test_ties_llamix(benchmark, tensors):
    b, xs, tb, txs = tensors
    n = b.size
    k = max(1, int(0.5 * n))
    sps = [K.sparsifier(K.RANK, n - k, n, weight=w) for w in (0.6, 0.4)]
    out = benchmark(K.task_vectors, b, xs, sps, "sum", False, True, 1.0, 0, "w", 1, "bfloat16", "bfloat16")
    want = as_f32(mk_ties(tb, txs, [0.6, 0.4], 0.5))
    ulp = np.spacing(np.maximum(np.abs(want), np.abs(bits_to_f32(b)))) * 2.0 ** 16
    # bf16 task vectors take few distinct magnitudes, so about 1% of the elements tie at the top-k
    # threshold (kept or dropped by each tool's tie rule); near-zero votes may elect other signs
    assert np.mean(np.abs(bits_to_f32(out) - want) / ulp <= 4) > 0.97


@pytest.mark.benchmark(group="ties")
def test_ties_mergekit(benchmark, tensors):
    _, _, tb, txs = tensors
    benchmark(mk_ties, tb, txs, [0.6, 0.4], 0.5)


@pytest.mark.benchmark(group="dare_ties")
def test_dare_ties_llamix(benchmark, tensors):
    b, xs, _, _ = tensors
    sps = [K.sparsifier(K.RANDOM, density=0.5, weight=w) for w in (0.6, 0.4)]
    benchmark(K.task_vectors, b, xs, sps, "sum", True, False, 1.0, 0, "w", 1, "bfloat16", "bfloat16")


@pytest.mark.benchmark(group="dare_ties")
def test_dare_ties_mergekit(benchmark, tensors):
    from mergekit.merge_methods.generalized_task_arithmetic import get_mask
    from mergekit.sparsify import bernoulli
    _, _, tb, txs = tensors

    def run():
        deltas = torch.stack([bernoulli(x - tb, 0.5, rescale_norm="l1") for x in txs])
        weights = torch.tensor([0.6, 0.4], dtype=deltas.dtype).reshape(-1, 1, 1)
        deltas = deltas * weights
        mask = get_mask(deltas, "sum", deltas.dtype)
        return (tb + (deltas * mask).sum(0)).to(torch.bfloat16)
    benchmark(run)
