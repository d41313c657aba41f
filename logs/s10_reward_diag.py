# session 10: the dream's reward vs its own frames (player enters the previous coin cell), score bar read-back (scratch)
import sys, numpy as np, torch
torch.set_num_threads(1)
from envs.dream import DreamCore
from envs.coinchase_reader import read_state
ck, n, H = sys.argv[1], 8, int(sys.argv[2]) if len(sys.argv) > 2 else 300
core = DreamCore(ck, n)
rng = np.random.default_rng(0)
idx = rng.integers(core.bank_size, size=n)
ctx = [core.start_context(int(i)) for i in idx]
frames = np.stack([c[0] for c in ctx]); acts = np.stack([c[1] for c in ctx])
obs = core.reset_rows(np.arange(n), list(range(n)), frames, acts)
prev = read_state(obs)
a = rng.integers(5, size=n)
stats = dict(tp=0, fp=0, fn=0, frames=0, unread=0, score_bad=0, coin_moved_no_reward=0, coin_stayed_reward=0, not1=0)
for t in range(H):
    change = rng.random(n) < 0.25
    a = np.where(change, rng.integers(5, size=n), a)
    out = core.step(a)
    st = read_state(out.frames)
    r = np.round(out.rewards) > 0
    ok = st.one_of_each & prev.one_of_each
    reached = ok & (st.player == prev.coin).all(1)
    moved = ok & (st.coin != prev.coin).any(1)
    stats["tp"] += int((r & reached).sum()); stats["fp"] += int((r & ~reached & ok).sum()); stats["fn"] += int((~r & reached).sum())
    stats["coin_moved_no_reward"] += int((moved & ~r).sum()); stats["coin_stayed_reward"] += int((~moved & r & ok).sum())
    stats["frames"] += n; stats["unread"] += int((st.score < 0).sum()); stats["not1"] += int((~st.one_of_each).sum())
    d = (st.score - prev.score) % 1000
    stats["score_bad"] += int(((st.score >= 0) & (prev.score >= 0) & (d != reached.astype(int))).sum())
    prev = st
print(ck, stats)
