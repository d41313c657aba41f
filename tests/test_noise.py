"""Per-row noise streams (worldmodel.noise): a row's noise is its own seed's, whatever shares the batch."""
import numpy as np
import torch

from worldmodel.noise import RowNoise, bits_to_normal, hashed_normal


def test_draws_are_standard_normal_and_uncorrelated_across_rows_and_draws():
    noise = RowNoise(4)
    noise.seed(np.arange(4), [0, 1, 2, 2 ** 40])
    source = noise.source()
    x = torch.cat([source((4, 512)) for _ in range(100)], dim=1)                 # (4, 51200)
    assert abs(float(x.mean())) < 0.02 and abs(float(x.std()) - 1.0) < 0.02
    assert abs(float((x ** 4).mean()) - 3.0) < 0.15                             # Gaussian tails, not uniform
    off_diagonal = torch.corrcoef(x)[~torch.eye(4, dtype=torch.bool)]
    assert float(off_diagonal.abs().max()) < 0.03
    first, second = x[0, :512], x[0, 512:1024]                                   # consecutive draws of one row
    assert abs(float(torch.corrcoef(torch.stack([first, second]))[0, 1])) < 0.15


def test_a_row_reproduces_alone_what_it_draws_in_a_batch():
    batch = RowNoise(3)
    batch.seed(np.arange(3), [7, 8, 9])
    single = RowNoise(1)
    single.seed(np.array([0]), [8])
    for _ in range(3):
        together = batch.source()((3, 2, 5))
        alone = single.source()((1, 2, 5))
        assert torch.equal(together[1], alone[0])


def test_a_subset_draw_advances_only_its_rows_and_reseeding_restarts_a_stream():
    noise = RowNoise(3)
    noise.seed(np.arange(3), [1, 2, 3])
    first = noise.source()((3, 4))
    noise.source(np.array([2]))((1, 4))
    assert noise.counters.tolist() == [1, 1, 2]
    noise.seed(np.array([0]), [1])
    assert torch.equal(noise.source(np.array([0]))((1, 4))[0], first[0])
    assert not torch.equal(hashed_normal(torch.tensor([1]), torch.tensor([0]), (4,)),
                           hashed_normal(torch.tensor([1]), torch.tensor([1]), (4,)))


def test_a_draw_of_the_wrong_batch_size_is_refused():
    noise = RowNoise(2)
    try:
        noise.source()((3, 4))
    except ValueError as error:
        assert "2 rows" in str(error)
    else:
        raise AssertionError("a (3, 4) draw from a 2-row source must fail")


def test_every_hash_value_maps_to_a_finite_normal_even_the_extremes():
    extremes = torch.tensor([0, 1, 511, 512, 2 ** 31, 2 ** 32 - 513, 2 ** 32 - 512, 2 ** 32 - 2, 2 ** 32 - 1])
    z = bits_to_normal(extremes)
    assert torch.isfinite(z).all() and float(z.abs().max()) < 6.0
    assert float(z[0]) < -5.0 and float(z[-1]) > 5.0 and float(z[0]) == -float(z[-1])   # symmetric tails
