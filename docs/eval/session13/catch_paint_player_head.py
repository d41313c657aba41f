"""Scratch recipe behind docs/eval/session13/catch_paint_player_head.md (not part of the package): the bundle with a player-head event model installed; the catch painted (fitted enemy-on-player latent) where the drawn enemy cell is the player head's cell. argv: checkpoint out paint(0/1)"""
import sys
import numpy as np, torch
import worldmodel.dit as ditmod
from worldmodel import checkpoint
from worldmodel.data import load_episodes
from train.common.events import label_episodes, PLAYER_READERS
from train.common.paint import fit_cell_latent
from train.common.cli import compose
from train.eval.run import EvalConfig, main
ckpt, out, paint = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
torch.set_num_threads(1)
if paint:
    eps, _ = load_episodes("coinchase/mixed-events-v0", "runs/s10pipe/data")
    frames = np.concatenate([e.frames for e in eps]); cells = label_episodes(eps, "coinchase")
    player = np.concatenate([PLAYER_READERS["coinchase"](e.frames) for e in eps])
    pick = np.flatnonzero((cells[:, 0] == player) & (player >= 0))[:512]
    print("catch frames", len(pick))
    ae = checkpoint.load(ckpt).autoencoder
    catch = torch.from_numpy(fit_cell_latent(ae, frames[pick], cells[pick, 0]))
    orig_sample, orig_paint = ditmod.DiT.sample_events, ditmod.DiT.paint
    def sample_events(self, previous, actions, gaussian, min_prob=0.0):
        cells_, maps, outcomes = orig_sample(self, previous, actions, gaussian, min_prob)
        self._player = self.event_model.player_logits(self.event_model.tokens(previous, actions)).argmax(-1)
        return cells_, maps, outcomes
    def paint_(self, latents, maps):
        latents = orig_paint(self, latents, maps)
        enemy = maps[:, 0].flatten(1).argmax(-1)
        hit = enemy == self._player                                           # (B,)
        lit = torch.zeros_like(maps[:, 0]).flatten(1)
        lit[hit, enemy[hit]] = 1
        lit = lit.view_as(maps[:, 0])[:, None].bool()
        return torch.where(lit, catch.to(latents.dtype)[None, :, None, None], latents)
    ditmod.DiT.sample_events, ditmod.DiT.paint = sample_events, paint_
main(compose("eval", EvalConfig, [f"checkpoints=[{ckpt}]", "names=[catch]", "starts=4", "adversarial_starts=2",
                                   "threads=1", f"out={out}"]))
