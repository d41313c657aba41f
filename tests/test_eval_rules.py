"""train.eval.rules: the real game passes every rule, each broken rule is charged to its column, and the summaries."""
import numpy as np
import pytest

from envs.coinchase import CELL_PX, ENEMY, FLOOR, PALETTE, PLAYER, SPRITES, WALLS, CoinChaseEnv
from envs.coinchase_reader import read_state
from train.eval.rollouts import concat_rows, copy_last_frames, position_error, real_frames, real_rollouts
from train.eval.rules import RATES, RuleScores, check_rules, controllability, summarise_rules, with_random_actions

HORIZON = 48


@pytest.fixture(scope="module")
def real():
    """Random and seeker play over 3 seeds with a chasing enemy that cannot kill: catches (the enemy drawn over the
    player) and coin pickups both happen."""
    parts = [real_rollouts("policy", [0, 1, 2], 2, 2, 5, HORIZON, chase_prob=1.0, policy=policy, lethal=False)
             for policy in ("random", "seeker")]
    return concat_rows(parts)


def stream_of(frames: np.ndarray):
    """frames (S, T, H, W, 3) as a rollout stream with no reward and no termination."""
    zeros = np.zeros(len(frames))
    return ((frames[:, h], zeros, zeros) for h in range(frames.shape[1]))


def paint(frame: np.ndarray, colour: int, cell, mask=None) -> None:
    block = frame[cell[0] * CELL_PX:(cell[0] + 1) * CELL_PX, cell[1] * CELL_PX:(cell[1] + 1) * CELL_PX]
    block[np.ones((CELL_PX, CELL_PX), bool) if mask is None else mask] = PALETTE[colour]


def test_the_real_game_is_exact_and_breaks_no_rule(real):
    assert real.terminated.any() and (np.diff(real.scores, axis=1) > 0).any()     # catches and pickups happened
    rules = check_rules(real_frames(real), real)
    assert rules.player_exact.all() and not rules.violation.any()
    table = summarise_rules(rules, real, [1, HORIZON])
    assert table[HORIZON]["player_exact"] == {"mean": 1.0, "std": 0.0, "n": len(real.seeds)}
    assert all(table[h][k]["mean"] == 0.0 for h in (1, HORIZON) for k in RATES)


def context_players(real) -> np.ndarray:
    """(S, 2) the player's cell in each row's last context frame."""
    return read_state(real.context[:, -1]).player


def broken_frame(real, rule: str, row: int, t: int) -> np.ndarray:
    """Row `row`'s frame t with one rule broken."""
    frame = real.frames[row, t].copy()
    player, coin, enemy = (tuple(x[row, t]) for x in (real.players, real.coins, real.enemies))
    taken = {player, coin, enemy}
    far = max((c for c in [(1, 0), (1, 7), (7, 0), (7, 7)] if c not in taken),
              key=lambda c: abs(c[0] - enemy[0]) + abs(c[1] - enemy[1]))
    if rule == "two_players":
        paint(frame, PLAYER, far, SPRITES[PLAYER])
    elif rule == "no_coin":
        paint(frame, FLOOR, coin)
    elif rule == "teleported_enemy":
        paint(frame, FLOOR, enemy)
        paint(frame, ENEMY, far, SPRITES[ENEMY])
    elif rule == "score_jump":
        env = CoinChaseEnv(render_mode="rgb_array")
        env.player, env.coin, env.enemy, env.score = player, coin, enemy, int(real.scores[row, t]) + 5
        frame = env.render()
    elif rule == "broken_wall":
        paint(frame, FLOOR, sorted(WALLS)[0])
    elif rule == "entity_in_wall":
        paint(frame, FLOOR, player)
        paint(frame, PLAYER, sorted(WALLS)[0], SPRITES[PLAYER])
    return frame


@pytest.mark.parametrize("rule,columns", [("two_players", {"entity_count"}), ("no_coin", {"entity_count"}),
                                          ("teleported_enemy", {"enemy_jump"}), ("score_jump", {"score_broken"}),
                                          ("broken_wall", {"walls_broken"}),
                                          ("entity_in_wall", {"in_wall", "walls_broken"})])   # drawn over the wall
def test_each_broken_rule_is_charged_to_its_column(real, rule, columns):
    row = 0
    apart = [(t, len({tuple(x[row, t]) for x in (real.players, real.coins, real.enemies)})) for t in range(5, HORIZON)]
    t = next(t for t, distinct in apart if distinct == 3)        # a frame where no sprite hides another
    frames = real.frames.copy()
    frames[row, t] = broken_frame(real, rule, row, t)
    rules = check_rules(stream_of(frames), real)
    assert rules.violation[row, t] and not rules.violation[:, :t].any() and not rules.violation[row + 1:].any()
    charged = {k for k in RATES if k not in ("violation", "player_wrong") and getattr(rules, k)[row, t]}
    assert charged == columns


def test_a_dream_that_lags_one_frame_behind_is_caught_as_player_wrong(real):
    lagging = np.concatenate([real.context[:, -1:], real.frames[:, :-1]], 1)      # frame h shows the real frame h - 1
    rules = check_rules(stream_of(lagging), real)
    previous = np.concatenate([context_players(real)[:, None], real.players[:, :-1]], 1)          # (S, T, 2)
    moved = (previous != real.players).any(2)
    assert moved.mean() > 0.3
    assert np.array_equal(rules.player_wrong, moved) and np.array_equal(rules.violation, moved)


def test_copy_last_frame_is_the_dont_move_baseline(real):
    rules = check_rules(copy_last_frames(real), real)
    start = context_players(real)[:, None].repeat(HORIZON, 1)                                  # (S, T, 2)
    assert np.array_equal(rules.player_err, position_error(start.reshape(-1, 2), real.players.reshape(-1, 2))
                          .reshape(start.shape[:2]))
    assert not (rules.entity_count | rules.walls_broken | rules.in_wall | rules.enemy_jump).any()


def test_rates_run_over_frames_1_to_h_and_exactness_is_read_at_frame_h(real):
    shape = real.actions.shape
    rules = RuleScores(np.ones(shape, bool), np.zeros(shape), *(np.zeros(shape, bool) for _ in range(9)))
    rules.enemy_jump[:, 0] = True                          # every row jumps at frame 1 only
    rules.player_exact[:, 3] = False                       # and is off the real cell at frame 4 only
    table = summarise_rules(rules, real, [1, 4, 8])
    assert [table[h]["enemy_jump"]["mean"] for h in (1, 4, 8)] == [1.0, 0.25, 0.125]
    assert [table[h]["player_exact"]["mean"] for h in (1, 4, 8)] == [1.0, 0.0, 1.0]
    assert table[8]["violation"]["mean"] == 0.25 and table[8]["violation"]["n"] == len(real.seeds)


def test_reward_and_termination_outputs_are_scored_against_the_dreams_own_events(real):
    """The real game read as a dream, with its own rewards / terminations as the outputs: F1 1 vs the dream's
    events; outputs that never fire: F1 0 (where there were events)."""
    def stream(said: bool):
        for h in range(real.actions.shape[1]):
            yield (real.frames[:, h], real.rewards[:, h] * said, real.terminated[:, h].astype(float) * said)

    table = summarise_rules(check_rules(stream(True), real), real, [HORIZON])[HORIZON]
    quiet = summarise_rules(check_rules(stream(False), real), real, [HORIZON])[HORIZON]
    assert table["reward_f1_dream"]["n"] > 0 and table["reward_f1_dream"]["mean"] == 1.0
    assert quiet["reward_f1_dream"]["mean"] == 0.0
    if table["termination_f1_dream"]["n"]:
        assert table["termination_f1_dream"]["mean"] == 1.0


def test_random_action_rollouts_keep_the_starts_and_draw_seeded_actions(real):
    a, b = with_random_actions(real, 16, 5), with_random_actions(real, 16, 5)
    assert a.actions.shape == (len(real.seeds), 16) and a.frames.shape[1] == 16
    assert np.array_equal(a.actions, b.actions) and not np.array_equal(a.actions, real.actions[:, :16])
    assert np.array_equal(a.context, real.context) and np.array_equal(a.frames, real.frames[:, :16])
    assert set(np.unique(a.actions)) <= set(range(5))


def test_controllability_is_psnr_under_real_minus_random_actions(real):
    rows = len(real.seeds)
    under_real = np.full((rows, HORIZON), 30.0)
    under_random = np.full((rows, 16), 25.0)
    under_random[real.seeds == 0, 3] = 29.0
    delta = controllability(under_real, under_random, real)
    assert set(delta) == {4, 16} and delta[16] == {"mean": 5.0, "std": 0.0, "n": rows}
    assert delta[4]["mean"] == pytest.approx((1 + 5 + 5) / 3) and delta[4]["std"] > 0
    assert set(controllability(under_real, under_random[:, :8], real)) == {4}
