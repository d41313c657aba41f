# session 10: decode painted score bars with each decoder and read them with the game reader (scratch)
import sys, numpy as np, torch, worldmodel
from pathlib import Path
torch.set_num_threads(1)
from envs.coinchase_reader import read_state
from worldmodel.score_bar import load_score_bar
from train.common.latents import load_latents
bar, cfg = load_score_bar(sys.argv[1]); bar.eval()
lat = load_latents(Path("runs/coinchase/autoencoder/latents"))
frames = torch.from_numpy(np.concatenate([e.frames for e in lat.val[:40]]).astype(np.float32))
rng = np.random.default_rng(0)
N = int(sys.argv[2])
scores = torch.arange(N).repeat(3)
base = frames[torch.from_numpy(rng.integers(len(frames), size=len(scores)))]
with torch.no_grad():
    painted = bar.paint(base, scores)
    rt = (bar.read(painted) == scores).float().mean()
print(f"round trip {rt:.4f}")
for dec in sys.argv[3:]:
    ae = worldmodel.load(dec).autoencoder.eval()
    with torch.no_grad():
        fr = torch.cat([ae.decode(painted[i:i+256]) for i in range(0, len(painted), 256)]).numpy()
    s = read_state(fr).score
    ok = s == scores.numpy()
    bad = sorted(set(scores.numpy()[~ok].tolist()))
    print(f"{dec}: exact {ok.mean():.4f}  wrong scores ({len(bad)}): {bad[:40]}")
