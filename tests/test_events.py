"""Entity events: the random entities' next cells are drawn first, then the frame is generated given them.

Specification: sampling follows the event model's probabilities and never draws a cell below the floor;
labels read from real frames are the game's own cells; a DiT with event channels needs events for the
frames it generates, ignores them on clean frames, and hears them; the rollout draws the events from
the cache's last frame, reproducibly, and returns them.
"""
import sys
import types

import numpy as np
import pytest
import torch

from envs import coinchase_labels
from envs.coinchase import CELLS, CoinChaseEnv
from train.common.events import attach_events
from train.common.plugins import load_reader
from worldmodel.data import Episode
from worldmodel.events import cell_maps, event_loss, sample_cells
from worldmodel.rollout import new_cache, next_chunk, prime

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_sampling_follows_the_probabilities_and_the_floor():
    probs = torch.tensor([0.6, 0.3, 0.095, 0.005])
    logits = probs.log().expand(20000, 1, 4)
    cells = sample_cells(logits, torch.randn(20000, 1, 4, generator=torch.Generator().manual_seed(0)), min_prob=0.01)
    freq = torch.bincount(cells.flatten(), minlength=4).float() / 20000
    kept = probs[:3] / probs[:3].sum()
    assert freq[3] == 0                                       # below the floor: never drawn
    assert torch.allclose(freq[:3], kept, atol=0.015)         # the rest in proportion
    again = sample_cells(logits, torch.randn(20000, 1, 4, generator=torch.Generator().manual_seed(0)), min_prob=0.01)
    assert torch.equal(cells, again)                          # the noise decides: seeded rollouts reproduce


def test_the_most_likely_cell_survives_any_floor():
    logits = torch.zeros(3, 2, 50)                             # 1/50 each, floor 0.1
    cells = sample_cells(logits, torch.randn(3, 2, 50), min_prob=0.1)
    assert cells.shape == (3, 2) and ((cells >= 0) & (cells < 50)).all()


def test_cell_maps_and_loss():
    cells = torch.tensor([[5, 63]])
    maps = cell_maps(cells, 8)
    assert maps.shape == (1, 2, 8, 8) and maps.sum() == 2 and maps[0, 0, 0, 5] == 1 and maps[0, 1, 7, 7] == 1
    confident = torch.full((1, 2, 64), -20.0).scatter(2, cells[..., None], 20.0)
    assert event_loss(confident, cells) < 1e-6 < event_loss(torch.zeros(1, 2, 64), cells)


def test_labels_are_the_games_enemy_and_coin_cells():
    env = CoinChaseEnv(lethal=False)
    frames, truth = [], []
    obs, info = env.reset(seed=3)
    for step in range(40):
        frames.append(obs)
        truth.append([info["enemy"][0] * CELLS + info["enemy"][1], info["coin"][0] * CELLS + info["coin"][1]])
        obs, _, _, _, info = env.step(step % 5)
    assert np.array_equal(coinchase_labels.cells(np.stack(frames)), np.array(truth))


def test_a_reader_is_named_by_its_module_or_by_the_game_whose_plugin_names_it():
    """configs/games/coinchase.yaml names envs.coinchase_labels: the game's name and the module load the same."""
    by_game, by_module = load_reader("coinchase"), load_reader("envs.coinchase_labels")
    assert by_game == by_module and by_module.cells is coinchase_labels.cells
    assert by_module.caught is coinchase_labels.caught and by_module.player_cells is coinchase_labels.player_cells
    assert load_reader("") is None


def test_a_reader_that_is_no_module_or_has_no_cells_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="unknown frame reader"):
        load_reader("no_such_reader_module")
    monkeypatch.setitem(sys.modules, "cellless_reader", types.ModuleType("cellless_reader"))
    with pytest.raises(ValueError, match="cells"):
        load_reader("cellless_reader")
    only_cells = types.ModuleType("only_cells_reader")
    only_cells.cells = lambda frames: np.zeros((len(frames), 1), np.int64)
    monkeypatch.setitem(sys.modules, "only_cells_reader", only_cells)
    reader = load_reader("only_cells_reader")
    assert reader.caught is None and reader.player_cells is None


def test_labels_that_do_not_match_the_cache_are_refused():
    episode = Episode(frames=np.zeros((3, 4, 2, 2), np.float32), actions=np.zeros(2, np.int64),
                      rewards=np.zeros(2, np.float32), terminations=np.zeros(2, bool), truncations=np.zeros(2, bool))
    with pytest.raises(ValueError, match="relabel"):
        attach_events([episode], torch.zeros(4, 2, dtype=torch.int64))
    attach_events([episode], torch.arange(6).view(3, 2))
    assert episode.infos["event_cells"].tolist() == [[0, 1], [2, 3], [4, 5]]


def test_dit_needs_events_for_generated_frames_only(perturbed_model):
    model = perturbed_model(event_channels=2)
    x, actions = torch.randn(1, 2, 4, 4, 4), torch.tensor([[1, 2]])
    with pytest.raises(ValueError, match="pass events"):
        model(x, torch.full((1, 2), 0.5), actions)
    clean = torch.zeros(1, 2)
    a = cell_maps(torch.tensor([[[0, 1], [2, 3]]]), 4)                                  # (1, 2, E, 4, 4)
    b = cell_maps(torch.tensor([[[5, 6], [7, 8]]]), 4)
    assert torch.equal(model(x, clean, actions).velocity, model(x, clean, actions, events=a).velocity)
    noisy = torch.full((1, 2), 0.5)
    assert not torch.allclose(model(x, noisy, actions, events=a).velocity, model(x, noisy, actions, events=b).velocity)
    with pytest.raises(ValueError, match="events"):
        model(x, noisy, actions, events=a[:, :, :1])


def test_rollout_draws_events_from_the_last_frame_reproducibly(perturbed_model):
    model = perturbed_model(event_channels=2, chunk=1, window=3)

    def run(seed: int):
        g = torch.Generator().manual_seed(seed)
        noise = lambda shape: torch.randn(shape, generator=g)  # noqa: E731
        cache = new_cache(model, 2)
        prime(model, cache, torch.randn(2, 2, 4, 4, 4, generator=torch.Generator().manual_seed(9)),
              torch.tensor([[5, 1], [5, 2]]))
        return next_chunk(model, cache, torch.tensor([[3], [4]]), [1.0, 0.5], noise, event_min_prob=0.0)

    first, again, other = run(0), run(0), run(1)
    assert first.events.shape == (2, 1, 2) and first.events.dtype == torch.int64
    assert torch.equal(first.events, again.events) and torch.equal(first.latents, again.latents)
    assert not torch.equal(first.latents, other.latents)
    with pytest.raises(ValueError, match="chunk must be 1"):
        cache = new_cache(model, 1)
        next_chunk(model, cache, torch.tensor([[3, 4]]), [1.0], lambda s: torch.randn(s))


def test_with_outcomes_the_step_reward_and_termination_come_from_the_event_model(perturbed_model):
    model = perturbed_model(event_channels=2, event_outcomes=True, chunk=1, window=3)
    g = torch.Generator().manual_seed(0)
    noise = lambda shape: torch.randn(shape, generator=g)  # noqa: E731
    cache = new_cache(model, 2)
    prime(model, cache, torch.randn(2, 2, 4, 4, 4), torch.tensor([[5, 1], [5, 2]]))
    previous = cache.previous.clone()
    result = next_chunk(model, cache, torch.tensor([[3], [4]]), [1.0, 0.5], noise, event_min_prob=0.0)
    tokens = model.event_model.tokens(previous, torch.tensor([3, 4]))
    expected = model.event_model.outcome_logits(tokens, cell_maps(result.events[:, 0], 4))
    assert torch.allclose(result.reward[:, 0], expected[:, 0]) and torch.allclose(result.termination[:, 0],
                                                                                    expected[:, 1])


def test_installing_an_event_model_with_outcomes_turns_them_on(tmp_path, untrained_checkpoint):
    import shutil

    import worldmodel
    from train.stages.events import install
    from worldmodel.events import EventModel, EventModelConfig, save_event_model

    target = tmp_path / "ckpt"
    shutil.copytree(untrained_checkpoint, target)
    before = worldmodel.load(target).dit
    assert not before.config.event_outcomes
    config = EventModelConfig(latent_channels=8, latent_size=8, n_actions=5, entities=2, dim=before.config.event_dim,
                              depth=before.config.event_depth, outcomes=True)
    events_dir = tmp_path / "events"
    events_dir.mkdir()
    torch.manual_seed(1)
    event_model = EventModel.from_config(config)
    save_event_model(events_dir, event_model, config)
    install(events_dir, [str(target)])
    after = worldmodel.load(target).dit
    assert after.config.event_outcomes
    for name, value in event_model.state_dict().items():
        assert torch.equal(after.event_model.state_dict()[name], value)
    for name, value in before.state_dict().items():
        if not name.startswith("event_model."):
            assert torch.equal(after.state_dict()[name], value)         # the DiT itself is untouched


def test_catch_labels_read_from_frames_are_the_games_own_catches():
    """A reader's `caught`: overlaps and swaps read off real frames equal CoinChase's `caught`, in play that goes on."""

    env = CoinChaseEnv(lethal=False)
    frame, _ = env.reset(seed=3)
    rng = np.random.default_rng(3)
    frames, truth = [frame], [False]
    for _ in range(600):
        frame, *_ = env.step(int(rng.integers(5)))
        frames.append(frame)
        truth.append(env.caught)
    assert sum(truth) >= 3
    assert coinchase_labels.caught(np.stack(frames)).tolist() == truth


def test_the_event_models_termination_label_is_the_catch_where_the_cache_reads_catches():
    """Play that goes on after a catch (lethal=False) records no termination; the reader's catch is the label."""
    from train.stages.events import termination_steps

    episode = Episode(frames=np.zeros((4, 1, 1, 1), np.float32), actions=np.zeros(3, np.int64),
                      rewards=np.zeros(3, np.float32), terminations=np.zeros(3, bool), truncations=np.zeros(3, bool))
    assert termination_steps(episode).tolist() == [False, False, False]
    episode.infos["caught"] = np.array([False, True, False, True])
    assert termination_steps(episode).tolist() == [True, False, True]


def test_player_labels_are_the_players_cell():
    env = CoinChaseEnv()
    frame, info = env.reset(seed=1)
    cell = int(info["player"][0]) * CELLS + int(info["player"][1])
    assert coinchase_labels.player_cells(frame[None]).tolist() == [cell]


def _episode_with_cells(cells, player) -> Episode:
    n = len(cells) - 1
    episode = Episode(frames=np.zeros((n + 1, 1, 4, 4), np.float32), actions=np.zeros(n, np.int64),
                      rewards=np.zeros(n, np.float32), terminations=np.zeros(n, bool), truncations=np.zeros(n, bool))
    episode.infos["event_cells"] = np.array(cells, np.int64)
    episode.infos["player_cell"] = np.array(player, np.int64)
    return episode


def test_a_transition_starts_from_an_overlap_where_two_entities_or_one_and_the_player_share_the_frame_befores_cell():
    from train.stages.events import overlap_frames_before

    # frames: apart, enemy on coin, enemy on player, apart (unseen cells never count), both codes nowhere (cell
    # K = 16 of a 4 x 4 latent: no overlap either), last frame (no step from it)
    episode = _episode_with_cells([[1, 2], [5, 5], [7, 3], [-1, -1], [16, 16], [4, 4]], [9, 8, 7, 6, 16, 4])
    assert overlap_frames_before(episode).tolist() == [False, True, True, False, False]
    del episode.infos["player_cell"]       # a cache without the player's labels: entities only
    assert overlap_frames_before(episode).tolist() == [False, True, False, False, False]


def test_overlap_weight_draws_overlap_transitions_that_much_more_often():
    from train.stages.events import EventsStageConfig, Transitions, draw_batch

    overlap = torch.zeros(1000, dtype=torch.bool)
    overlap[:10] = True                                                  # 1 in 100 of the transitions
    data = Transitions(*(torch.zeros(1000) for _ in range(7)), overlap=overlap)
    generator = torch.Generator().manual_seed(0)
    plain = draw_batch(data, EventsStageConfig(batch_size=20000), generator)
    weighted = draw_batch(data, EventsStageConfig(batch_size=20000, overlap_weight=10.0), generator)
    assert abs(float(overlap[plain].float().mean()) - 0.01) < 0.005
    assert abs(float(overlap[weighted].float().mean()) - 10 / 109) < 0.01      # 10 x 10 / (10 x 10 + 990)


def test_init_dir_starts_from_that_runs_event_model_and_refuses_other_shapes(tmp_path):
    from train.stages.events import EventsStageConfig, starting_model
    from worldmodel.events import EventModel, EventModelConfig, save_event_model

    config = EventModelConfig(latent_channels=4, latent_size=4, n_actions=5, entities=2, dim=16, depth=1)
    trained = EventModel.from_config(config)
    (tmp_path / "events/checkpoint").mkdir(parents=True)
    save_event_model(tmp_path / "events/checkpoint", trained, config)
    start = starting_model(EventsStageConfig(init_dir=str(tmp_path / "events")), config)
    assert all(torch.equal(a, b) for a, b in zip(start.state_dict().values(), trained.state_dict().values()))
    with pytest.raises(ValueError, match="init_dir"):
        starting_model(EventsStageConfig(init_dir=str(tmp_path / "events")), EventModelConfig(4, 4, 5, 2, dim=32))
