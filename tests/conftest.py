"""Shared test set-up: headless pygame, a small torch thread count, and the fixtures several test files use.

Fixtures: `one_torch_thread` (module scope, opt-in), `untrained_checkpoint` (a randomly initialised
CoinChase-shaped world-model checkpoint with real start contexts, built once per test run: speed and
plumbing do not depend on what the weights learned) and `perturbed_model` (a factory of tiny DiTs with
non-zero weights everywhere).
"""
import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

import pytest  # noqa: E402
import torch  # noqa: E402

from worldmodel.config import dit_preset  # noqa: E402
from worldmodel.dit import DiT  # noqa: E402

torch.set_num_threads(2)

UNTRAINED_BANK, UNTRAINED_CONTEXT = 4, 3   # start contexts in the untrained checkpoint, frames each


@pytest.fixture(scope="session")
def untrained_checkpoint(tmp_path_factory):
    """An untrained checkpoint: 64x64 frames, CoinChase's 5 actions, frames that depend on the action, a
    termination head that never fires, a bank of UNTRAINED_BANK real contexts of UNTRAINED_CONTEXT frames."""
    from train.common.untrained import save_untrained

    return save_untrained(tmp_path_factory.mktemp("untrained") / "ckpt", bank=UNTRAINED_BANK, context=UNTRAINED_CONTEXT)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`): its models
    are small, and on a busy 2-core machine two threads make a dreamed step many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def perturbed_dit(**overrides) -> DiT:
    """A tiny DiT (4 latent channels, 4x4 latents, patch 1) with non-zero weights everywhere (adaLN-Zero
    starts as identity otherwise), seeded, in eval mode."""
    torch.manual_seed(0)
    model = DiT(dit_preset("tiny", latent_channels=4, latent_size=4, patch=1, **overrides)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture
def perturbed_model():
    """Factory: `perturbed_model(**dit_overrides)` is `perturbed_dit`."""
    return perturbed_dit
