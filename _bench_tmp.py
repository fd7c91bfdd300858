import time, dataclasses, numpy as np
from tests.synthetic import make_trace
from lminf_diag.analyze import analyze_all
rng = np.random.default_rng(0)
L, H, N, K, M, D = 32, 32, 32768, 4, 2048, 4096
t = make_trace(n=256, train_len=64)
big = dataclasses.replace(t,
    layers=np.arange(L), heads=np.arange(H), positions=np.arange(N),
    entropy=rng.random((L, H, N), dtype=np.float32) * 5, max_logit=rng.random((L, H, N), dtype=np.float32),
    lse=rng.random((L, H, N), dtype=np.float32), sink_mass=rng.random((L, H, N), dtype=np.float32),
    dist_mass=np.zeros((L, H, N, 16), np.float16), dist_edges=np.arange(17),
    profile_rows=np.array([4096, 16384, 32767]), profile_dist=np.unique(np.geomspace(1, 32767, 200).astype(int)),
    hidden_layers=np.arange(K), hidden_positions=np.unique(np.geomspace(1, N, M).astype(int)) - 1,
    nll=rng.random(N, dtype=np.float32) * 3)
P = big.profile_dist.size
big = dataclasses.replace(big, logit_profile=np.maximum.accumulate(rng.random((L, H, 3, P), dtype=np.float32), axis=-1),
    hidden=rng.normal(size=(K, big.hidden_positions.size, D)).astype(np.float16))
big.meta.train_len = 4096
big.meta.n_tokens = N
t0 = time.time()
res = analyze_all({"baseline": big, "lambda": big})
print("analyze_all", time.time() - t0)
for k, r in res.items():
    t0 = time.time(); figs = r.figures(); j = sum(len(f.to_json()) for f in figs)
    print(k, "figures", round(time.time() - t0, 2), "json bytes", j)
