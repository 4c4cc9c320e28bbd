"""The random-stream table: distinct purposes never share a seed; a seed depends only on its key."""

import itertools

from nsr_lightning.streams import Stream, stream_seed


def test_no_two_purposes_share_a_seed():
    # the old integer salts collided: dynamic-sampling round 3 drew the global stream's seed
    seeds = {}
    for stream, rank, step, index in itertools.product(Stream, range(3), range(10), range(9)):
        seeds.setdefault(stream_seed(0, stream, rank, step, index), []).append((stream, rank, step, index))
    assert all(len(keys) == 1 for keys in seeds.values())


def test_seed_is_a_pure_function_of_its_key():
    assert stream_seed(5, Stream.ROLLOUT, 1, 2, 3) == stream_seed(5, "rollout", 1, 2, 3)
    assert stream_seed(5, Stream.ROLLOUT, 1, 2) != stream_seed(6, Stream.ROLLOUT, 1, 2)
    assert 0 <= stream_seed(2**40, Stream.EVAL) < 2**63
    assert stream_seed(0, Stream.EVALUATE, step=1, index="math500") != stream_seed(
        0, Stream.EVALUATE, step=1, index="aime"
    )
