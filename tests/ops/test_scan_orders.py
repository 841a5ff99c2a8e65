"""Tests for medad_monai.ops.scan_orders."""

from __future__ import annotations

import pytest
import torch

from medad_monai.ops import scan_orders
from medad_monai.ops.scan_orders import (
    SCAN_KINDS,
    SCAN_NUM_DIRECTIONS,
    circular_hilbert_center,
    inverse_permutation,
    inverse_scan_directions,
    scan_directions,
    scan_order,
)

SIZES = [(1, 1), (1, 7), (7, 1), (2, 3), (3, 2), (3, 11), (7, 5), (5, 7), (6, 6), (9, 9), (8, 8), (12, 20), (16, 16)]
LARGE_SIZES = [(32, 32), (64, 64)]
KIND_COUNTS = [(kind, k) for kind in SCAN_KINDS for k in SCAN_NUM_DIRECTIONS[kind]]


def _cells(perm: torch.Tensor, width: int) -> list[tuple[int, int]]:
    return [(i // width, i % width) for i in perm.tolist()]


def _count_steps(perm: torch.Tensor, width: int, max_distance: int = 1) -> int:
    """Consecutive pairs further apart than ``max_distance`` in Manhattan distance."""
    cells = _cells(perm, width)
    return sum(abs(r0 - r1) + abs(c0 - c1) > max_distance for (r0, c0), (r1, c1) in zip(cells, cells[1:]))


def _ring_index(height: int, width: int) -> dict[tuple[int, int], int]:
    """Ring of each band cell: rectangles shrink by one on every side until that side reaches the block."""
    top, bottom, left, right = circular_hilbert_center(height, width)
    thickness = (top, height - bottom, left, width - right)
    rings = {}
    for r in range(height):
        for c in range(width):
            if top <= r < bottom and left <= c < right:
                continue
            i = 0
            while True:
                t, b, l_, r_ = (min(i + 1, th) for th in thickness)
                if not (t <= r < height - b and l_ <= c < width - r_):
                    break
                i += 1
            rings[(r, c)] = i
    return rings


@pytest.mark.parametrize("kind, num_directions", KIND_COUNTS)
def test_every_direction_is_a_bijection_with_inverse(kind, num_directions):
    for height, width in SIZES + LARGE_SIZES:
        length = height * width
        perms = scan_directions(height, width, kind, num_directions)
        invs = inverse_scan_directions(height, width, kind, num_directions)
        assert perms.shape == invs.shape == (num_directions, length)
        assert perms.dtype == invs.dtype == torch.long
        identity = torch.arange(length).expand(num_directions, length)
        assert torch.equal(perms.sort(dim=-1).values, identity), (height, width)
        assert torch.equal(perms.gather(-1, invs), identity)
        assert torch.equal(invs.gather(-1, perms), identity)
        assert torch.equal(invs, inverse_permutation(perms))


@pytest.mark.parametrize("kind, num_directions", KIND_COUNTS)
def test_directions_pair_with_their_reverses_and_nest(kind, num_directions):
    half = num_directions // 2
    for height, width in SIZES:
        perms = scan_directions(height, width, kind, num_directions)
        assert torch.equal(perms[half:], perms[:half].flip(-1))
        assert torch.equal(perms[0], scan_order(height, width, kind))
        smaller = [k for k in SCAN_NUM_DIRECTIONS[kind] if k < num_directions]
        for k in smaller:
            assert torch.equal(scan_directions(height, width, kind, k)[: k // 2], perms[: k // 2])


def test_round_trip_of_a_feature_map_through_all_directions():
    x = torch.randn(2, 3, 7, 5)
    perms = scan_directions(7, 5, "circular_hilbert", 8)
    invs = inverse_scan_directions(7, 5, "circular_hilbert", 8)
    seqs = x.flatten(2)[:, :, perms]  # (B, C, K, L)
    assert seqs.shape == (2, 3, 8, 35)
    assert torch.equal(seqs[:, :, 2], x.flatten(2)[..., perms[2]])
    back = seqs.gather(-1, invs.expand_as(seqs))
    assert torch.equal(back, x.flatten(2).unsqueeze(2).expand_as(seqs))


def test_raster_and_zigzag_on_a_hand_checked_grid():
    assert scan_directions(2, 3, "raster", 4).tolist() == [
        [0, 1, 2, 3, 4, 5],
        [0, 3, 1, 4, 2, 5],
        [5, 4, 3, 2, 1, 0],
        [5, 2, 4, 1, 3, 0],
    ]
    assert scan_directions(2, 3, "zigzag", 4).tolist() == [
        [0, 1, 2, 5, 4, 3],
        [0, 3, 4, 1, 2, 5],
        [3, 4, 5, 2, 1, 0],
        [5, 2, 1, 4, 3, 0],
    ]


def test_directional_scans_on_hand_checked_grids():
    assert scan_directions(2, 3, "horizontal", 4).tolist() == [
        [0, 1, 2, 3, 4, 5],
        [0, 1, 2, 5, 4, 3],
        [5, 4, 3, 2, 1, 0],
        [3, 4, 5, 2, 1, 0],
    ]
    assert scan_directions(2, 3, "vertical", 4).tolist() == [
        [0, 3, 1, 4, 2, 5],
        [0, 3, 4, 1, 2, 5],
        [5, 2, 4, 1, 3, 0],
        [5, 2, 1, 4, 3, 0],
    ]
    assert scan_directions(2, 3, "diagonal", 4).tolist() == [
        [0, 1, 3, 2, 4, 5],
        [3, 0, 4, 1, 5, 2],
        [5, 4, 2, 3, 1, 0],
        [2, 5, 1, 4, 0, 3],
    ]
    # 3 x 3: anti-diagonals {0}, {1, 3}, {2, 4, 6}, {5, 7}, {8}
    assert scan_order(3, 3, "diagonal").tolist() == [0, 1, 3, 2, 4, 6, 5, 7, 8]


def test_hilbert_on_a_power_of_two_square_is_the_classical_curve():
    assert scan_order(4, 4, "hilbert").tolist() == [0, 1, 5, 4, 8, 12, 13, 9, 10, 14, 15, 11, 7, 6, 2, 3]
    for n in (8, 16, 32):
        for perm in scan_directions(n, n, "hilbert", 8):
            order = perm.tolist()
            # a Hilbert curve fills every aligned 2^k x 2^k block before leaving it
            side = 2
            while side <= n:
                for start in range(0, n * n, side * side):
                    chunk = order[start : start + side * side]
                    assert len({i // n // side for i in chunk}) == 1 and len({i % n // side for i in chunk}) == 1
                side *= 2


@pytest.mark.parametrize("height, width", [(2, 2), (2, 4), (4, 6), (6, 10), (8, 8), (12, 20), (16, 16), (64, 64)])
def test_hilbert_steps_are_4_neighbours_on_even_grids(height, width):
    for perm in scan_directions(height, width, "hilbert", 8):
        assert _count_steps(perm, width) == 0


@pytest.mark.parametrize("height, width", [(1, 7), (7, 1), (3, 4), (4, 3), (3, 10), (7, 5), (5, 7), (9, 9), (13, 6)])
def test_hilbert_odd_sizes_follow_the_parity_rule(height, width):
    perms = scan_directions(height, width, "hilbert", 8)
    assert _count_steps(perms[0], width) == 0
    one_odd_one_even = (height % 2) != (width % 2)
    steps = [_count_steps(p, width) for p in perms]
    assert all(_count_steps(p, width, max_distance=2) == 0 for p in perms)  # never more than a diagonal step
    if one_odd_one_even and min(height, width) > 1:
        assert sorted(steps) == [0, 0, 0, 0, 1, 1, 1, 1]
    else:
        assert steps == [0] * 8


def test_hilbert_directions_join_adjacent_corners():
    perms = scan_directions(8, 8, "hilbert", 8)
    ends = [(p[0].item(), p[-1].item()) for p in perms[:4]]
    assert ends == [(0, 7), (0, 56), (63, 56), (63, 7)]


def test_circular_hilbert_center():
    assert circular_hilbert_center(64, 64) == (16, 48, 16, 48)
    assert circular_hilbert_center(8, 8) == (2, 6, 2, 6)
    assert circular_hilbert_center(6, 10) == (1, 4, 2, 7)
    assert circular_hilbert_center(7, 7) == (2, 5, 2, 5)  # equal bands, not rows [1, 4)
    top, bottom, _, _ = circular_hilbert_center(1, 5)
    assert top == bottom


@pytest.mark.parametrize("height, width", SIZES + LARGE_SIZES)
def test_circular_hilbert_scans_band_then_block(height, width):
    top, bottom, left, right = circular_hilbert_center(height, width)
    block = {r * width + c for r in range(top, bottom) for c in range(left, right)}
    n_band = height * width - len(block)
    for perm in scan_directions(height, width, "circular_hilbert", 16)[:8]:
        order = perm.tolist()
        assert set(order[n_band:]) == block
        assert set(order[:n_band]) == set(range(height * width)) - block


RING_SIZES = [(4, 4), (6, 6), (7, 5), (8, 8), (9, 9), (10, 10), (12, 20), (16, 8), (32, 32)]


@pytest.mark.parametrize("height, width", RING_SIZES)
def test_circular_hilbert_rings_run_outer_to_inner(height, width):
    rings = _ring_index(height, width)
    top, bottom, left, right = circular_hilbert_center(height, width)
    unbroken = top <= width - right and left <= height - bottom
    for perm in scan_directions(height, width, "circular_hilbert", 16)[:8]:
        band = _cells(perm, width)[: len(rings)]
        ring_of = [rings[cell] for cell in band]
        assert ring_of == sorted(ring_of)
        if unbroken:
            for (r0, c0), (r1, c1), ring0, ring1 in zip(band, band[1:], ring_of, ring_of[1:]):
                if ring0 == ring1:
                    assert abs(r0 - r1) + abs(c0 - c1) == 1


def test_circular_hilbert_elongated_grid_jumps_once_per_two_sided_ring():
    # 16 x 8: bands 4 above / below, 2 left / right, so rings 2 and 3 have only top and bottom sides
    perm = scan_order(16, 8, "circular_hilbert")
    rings = _ring_index(16, 8)
    band = _cells(perm, 8)[: len(rings)]
    jumps = [
        rings[a] for a, b in zip(band, band[1:]) if rings[a] == rings[b] and abs(a[0] - b[0]) + abs(a[1] - b[1]) > 1
    ]
    assert jumps == [2, 3]


@pytest.mark.parametrize("size", [4, 7, 8, 16, 32, 64])
def test_circular_hilbert_is_one_4_neighbour_path_on_symmetric_squares(size):
    for perm in scan_directions(size, size, "circular_hilbert", 16):
        assert _count_steps(perm, size) == 0


@pytest.mark.parametrize("height, width", [(8, 8), (10, 10), (12, 20), (16, 8), (14, 9)])
def test_circular_hilbert_block_curve_has_unit_steps(height, width):
    # blocks 4x4, 5x5, 6x10, 8x4, 7x4: even or odd x odd, so the curve can always take unit steps
    top, bottom, left, right = circular_hilbert_center(height, width)
    n_block = (bottom - top) * (right - left)
    for perm in scan_directions(height, width, "circular_hilbert", 16)[:8]:
        assert _count_steps(perm[-n_block:], width) == 0


def test_circular_hilbert_hand_checked_4x4():
    perms = scan_directions(4, 4, "circular_hilbert", 4)
    # upper-left clockwise: outer ring, then the 2 x 2 block from (1, 1) towards (1, 2)
    assert perms[0].tolist() == [0, 1, 2, 3, 7, 11, 15, 14, 13, 12, 8, 4, 5, 9, 10, 6]
    # upper-left counter-clockwise: the transpose, the block curve from (1, 1) towards (2, 1)
    assert perms[1].tolist() == [0, 4, 8, 12, 13, 14, 15, 11, 7, 3, 2, 1, 5, 6, 10, 9]


def test_circular_hilbert_curve_starts_next_to_the_last_ring():
    perm = scan_order(8, 8, "circular_hilbert").tolist()
    n_band = 64 - 16
    assert perm[n_band - 1] == 2 * 8 + 1  # last ring ends at (2, 1)
    assert perm[n_band] == 2 * 8 + 2  # block corner (2, 2)


@pytest.mark.parametrize("size", [4, 7, 8, 16])
def test_circular_hilbert_direction_sets(size):
    length = size * size
    corners = [0, size - 1, length - 1, length - size]
    perms16 = scan_directions(size, size, "circular_hilbert", 16)
    perms8 = scan_directions(size, size, "circular_hilbert", 8)
    assert len({tuple(p.tolist()) for p in perms16}) == 16
    assert len({tuple(p.tolist()) for p in perms8}) == 8
    assert torch.equal(perms8[:4], perms16[:4])
    for k in range(8):
        assert perms16[k, 0].item() == corners[k // 2]
        assert perms16[k + 8, -1].item() == corners[k // 2]
    # clockwise from the upper-left corner goes right first, counter-clockwise goes down
    assert perms16[0, 1].item() == 1 and perms16[1, 1].item() == size


@pytest.mark.parametrize("kind", ["raster", "hilbert", "circular_hilbert"])
def test_cache_returns_copies(kind):
    first = scan_directions(12, 20, kind, 4)
    first.fill_(0)
    again = scan_directions(12, 20, kind, 4)
    assert torch.equal(again.sort(dim=-1).values[0], torch.arange(240))
    assert again.data_ptr() != scan_directions(12, 20, kind, 4).data_ptr()
    order = scan_order(12, 20, kind)
    order.zero_()
    assert torch.equal(scan_order(12, 20, kind), again[0])
    inv = inverse_scan_directions(12, 20, kind, 4)
    inv.zero_()
    assert torch.equal(inverse_scan_directions(12, 20, kind, 4), inverse_permutation(again))


def test_orders_are_computed_once():
    scan_directions(10, 14, "circular_hilbert", 16)
    misses = scan_orders._cached_directions.cache_info().misses
    for _ in range(3):
        scan_directions(10, 14, "circular_hilbert", 16)
        inverse_scan_directions(10, 14, "circular_hilbert", 16)
    assert scan_orders._cached_directions.cache_info().misses == misses


def test_inverse_permutation():
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    inv = inverse_permutation(perm)
    assert torch.equal(perm[inv], torch.arange(50))
    x = torch.randn(3, 50)
    assert torch.equal(x[:, perm][:, inv], x)
    assert torch.equal(inverse_permutation(perm.int()), inv)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: scan_directions(8, 8, "spiral", 2), ValueError, "kind"),
        (lambda: scan_order(8, 8, "spiral"), ValueError, "kind"),
        (lambda: scan_directions(8, 8, "raster", 3), ValueError, "num_directions"),
        (lambda: scan_directions(8, 8, "raster", 8), ValueError, r"num_directions.*\(2, 4\)"),
        (lambda: scan_directions(8, 8, "circular_hilbert", 32), ValueError, "num_directions"),
        (lambda: scan_directions(8, 8, "hilbert", 16), ValueError, "num_directions"),
        (lambda: scan_directions(0, 8, "raster", 2), ValueError, "height must be >= 1"),
        (lambda: scan_order(8, -1, "hilbert"), ValueError, "width must be >= 1"),
        (lambda: scan_order(2.5, 8), TypeError, "height"),
        (lambda: scan_order(8, True), TypeError, "width"),
        (lambda: circular_hilbert_center(8, 0), ValueError, "width"),
        (lambda: inverse_permutation(torch.tensor([0, 0, 2])), ValueError, "perm"),
        (lambda: inverse_permutation(torch.tensor([1, 2, 3])), ValueError, "perm"),
        (lambda: inverse_permutation(torch.tensor([0.0, 1.0])), TypeError, "perm"),
        (lambda: inverse_permutation(torch.tensor(0)), ValueError, "perm"),
    ],
)
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
