"""envs.coinchase_reader: exact on real frames (overlapping sprites included); it sees what a broken frame breaks."""
import numpy as np
import pytest

from envs.coinchase import CELL_PX, COIN, ENEMY, FLOOR, PALETTE, PLAYER, SPRITES, WALL, WALLS, CoinChaseEnv
from envs.coinchase_reader import VISIBLE, read_player_and_score, read_state
from envs.policies import make_policy

EPISODES, STEPS = 8, 400      # 3,200 real frames, half random, half coin seeker


@pytest.fixture(scope="module")
def played():
    """Real frames (N, 64, 64, 3) and their info (player, coin, enemy (N, 2), score (N,)); a chasing enemy that
    cannot kill (lethal=False) sits on the player often, so overlapping sprites are well represented."""
    env, rng = CoinChaseEnv(chase_prob=1.0, lethal=False, horizon=STEPS), np.random.default_rng(0)
    frames, infos = [], []
    for episode in range(EPISODES):
        policy = make_policy("seeker" if episode % 2 else "random", 5, rng)
        obs, info = env.reset(seed=episode)
        policy.reset(rng)
        for _ in range(STEPS):
            frames.append(obs), infos.append(info)
            obs, _, _, _, info = env.step(policy(obs, info))
    truth = {key: np.stack([info[key] for info in infos]) for key in ("player", "coin", "enemy", "score")}
    return np.stack(frames), truth


def paint(frame: np.ndarray, colour: int, cell: tuple[int, int], mask: np.ndarray | None = None) -> np.ndarray:
    """A copy of frame (64, 64, 3) with `colour` drawn into `cell` through `mask` (default: the whole cell)."""
    out = frame.copy()
    block = out[cell[0] * CELL_PX:(cell[0] + 1) * CELL_PX, cell[1] * CELL_PX:(cell[1] + 1) * CELL_PX]
    block[np.ones((CELL_PX, CELL_PX), bool) if mask is None else mask] = PALETTE[colour]
    return out


def test_reader_is_exact_on_real_frames(played):
    frames, truth = played
    state = read_state(frames)
    for key in ("player", "coin", "enemy"):
        assert np.array_equal(getattr(state, key), truth[key]), key
    assert np.array_equal(state.score, truth["score"] % 1000)
    assert state.one_of_each.all() and state.walls_intact.all() and not state.entity_in_wall.any()


def test_sprites_hidden_under_the_enemy_are_still_read(played):
    frames, truth = played
    caught = (truth["enemy"] == truth["player"]).all(1)
    on_coin = (truth["enemy"] == truth["coin"]).all(1)
    assert caught.sum() > 50 and on_coin.sum() > 5          # the sample really has both overlaps
    state = read_state(frames[caught | on_coin])
    assert np.array_equal(state.player, truth["player"][caught | on_coin])
    assert np.array_equal(state.coin, truth["coin"][caught | on_coin])
    assert VISIBLE[PLAYER][1] == 8 and VISIBLE[COIN][0, 1] == 8     # the pixels the enemy leaves of each


def test_every_score_the_bar_can_show_is_read():
    env = CoinChaseEnv(render_mode="rgb_array")
    env.reset(seed=0)
    frames = []
    for score in range(1000):
        env.score = score
        frames.append(env.render())
    assert read_state(np.stack(frames)).score.tolist() == list(range(1000))


def test_a_digit_that_matches_no_glyph_reads_as_unreadable(played):
    frame = played[0][0].copy()
    frame[1:6, 55:58] = PALETTE[FLOOR]                       # the middle digit wiped
    assert read_state(frame[None]).score[0] == -1


def test_extra_and_missing_entities_are_counted(played):
    frames, truth = played
    frame, coin = frames[0], tuple(truth["coin"][0])
    taken = {tuple(truth[k][0]) for k in ("player", "coin", "enemy")}
    free = next(c for c in [(7, 0), (7, 7), (1, 0), (1, 7)] if c not in taken)
    two_players = paint(frame, PLAYER, free, SPRITES[PLAYER])
    no_coin = paint(frame, FLOOR, coin)
    state = read_state(np.stack([two_players, no_coin]))
    assert state.n_players.tolist() == [2, 1] and state.n_coins.tolist() == [1, 0]
    assert tuple(state.coin[1]) == (-1, -1) and not state.one_of_each.any()


def test_broken_walls_and_entities_in_walls_are_seen(played):
    frame = played[0][0]
    wall = sorted(WALLS)[0]
    broken = paint(frame, FLOOR, wall)
    spurious = paint(frame, WALL, (7, 0) if (7, 0) not in WALLS else (7, 7))
    enemy_in_wall = paint(frame, ENEMY, wall, SPRITES[ENEMY])
    state = read_state(np.stack([frame, broken, spurious, enemy_in_wall]))
    assert state.walls_intact.tolist() == [True, False, False, False]
    assert state.entity_in_wall.tolist() == [False, False, False, True]


def test_colours_near_the_palette_read_as_the_palette(played):
    frames, truth = played
    noisy = np.clip(frames[:200].astype(int) + np.random.default_rng(0).integers(-20, 21, frames[:200].shape), 0, 255)
    player, score = read_player_and_score(noisy.astype(np.uint8))
    assert np.array_equal(player, truth["player"][:200]) and np.array_equal(score, truth["score"][:200] % 1000)


def test_frames_that_are_not_coinchase_frames_are_refused():
    with pytest.raises(ValueError, match="64"):
        read_state(np.zeros((2, 32, 32, 3), np.uint8))
