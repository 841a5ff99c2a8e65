"""Scan orders: permutations that serialize an H x W grid for 2D selective scans.

A scan order is a permutation ``perm`` (LongTensor, length ``L = H * W``) of the
row-major flat indices ``h * W + w``, listed in sequence order, and ``inv`` is its
inverse::

    seq = x.flatten(-2)[..., perm]       # (..., H, W) -> (..., L)
    x_flat = seq[..., inv]               # back to row-major

A 2D selective-scan mixer (SS2D) scans ``K`` directions at once: with ``perms`` of
shape (K, L) from :func:`scan_directions`, ``x.flatten(2)[:, :, perms]`` maps
(B, C, H, W) to (B, C, K, L), and ``ys.gather(-1, inv.expand_as(ys))`` (or
``ys[..., k, inv[k]]``) brings each direction back to row-major order.

Directions always come in forward / reverse pairs: for ``K`` directions the rows are
``[d0, ..., d(K/2 - 1), reverse(d0), ..., reverse(d(K/2 - 1))]``, i.e. row ``k + K/2``
is row ``k`` flipped. SS2D blocks rely on this order.

Kinds (``SCAN_KINDS``) and their valid direction counts (``SCAN_NUM_DIRECTIONS``):

- ``"raster"``: row-major. 2: row-major + reverse; 4: VMamba cross-scan
  (row-major, column-major, then both reversed).
- ``"zigzag"``: snake (boustrophedon) rows, every odd row right-to-left. 2: row
  snake + reverse; 4: row snake, column snake (every odd column bottom-to-top), reverses.
- ``"hilbert"``: generalized Hilbert ("gilbert") curve for any H x W, see
  :func:`_gilbert_cells`. 2: the curve from the upper-left corner + reverse;
  4: adds the curve from the upper-left corner travelling along the other axis;
  8: adds both curves rotated by 180 degrees (starting at the lower-right corner).
  The 8 curves join every ordered pair of adjacent grid corners. ``d0`` travels
  along the longer side, or along the shorter one when only that gives unit steps,
  so it is a 4-neighbour path for every size; on power-of-two squares it is the
  classical Hilbert curve. A curve travelling along an odd side while the other
  side is even cannot be a corner-to-corner 4-neighbour path (checkerboard parity)
  and takes exactly one diagonal step, so on grids with one odd and one even side
  half of the variants have one diagonal step; on even-sized grids none does.
- ``"circular_hilbert"``: SP-Mamba section 3.3, see :func:`circular_hilbert_center`.
  The outer band is scanned ring by ring from the outermost ring inward, each
  ring around a rectangle perimeter, then the central block by the generalized
  Hilbert curve. Inward directions are start corner x rotation, corners in the
  order upper-left, upper-right, lower-right, lower-left, clockwise before
  counter-clockwise; the reversed (centre-to-outside) scans follow.
  2: upper-left clockwise; 4: upper-left cw / ccw; 8 (the paper's experiments):
  upper-left and upper-right, cw / ccw; 16 (the paper's full set): all four corners.
  Each ring is the part of a rectangle's perimeter that lies outside the next,
  smaller rectangle (one cell peeled off every side whose band is not used up);
  the Hilbert curve starts at the block corner nearest the end of the last ring and
  travels towards the next block corner in the rings' rotation sense. Rings are
  unbroken 4-neighbour walks whenever the band above the block is at most as thick
  as the band right of it and the band left of it at most as thick as the band
  below, in particular for every square grid; on more elongated grids the inner
  rings are two opposite sides and the walk jumps across the block once per ring.
  Square grids whose size is 0 or 3 modulo 4 (8, 16, 32, 64, ...) have symmetric
  bands, and there every direction is a single 4-neighbour path.
- ``"horizontal"``, ``"vertical"``, ``"diagonal"``: the Wave-MambaAD HFSS
  directional scans for the LH / HL / HH bands. horizontal: row-major, 4 adds the
  row snake; vertical: column-major, 4 adds the column snake; diagonal: along
  anti-diagonals (``h + w`` ascending, top-right to bottom-left within each), 4 adds
  the main-diagonal scan (``w - h`` ascending, i.e. from the lower-left corner to the
  upper-right one, top-left to bottom-right within each), since the HH band holds
  detail of both diagonal orientations.

Every kind serves every size with ``height >= 1`` and ``width >= 1``. Orders are
computed once per (height, width, kind, num_directions) and cached; each call
returns a fresh copy, so callers may modify the result without touching the cache.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from functools import lru_cache

import torch

__all__ = [
    "SCAN_KINDS",
    "SCAN_NUM_DIRECTIONS",
    "circular_hilbert_center",
    "inverse_permutation",
    "inverse_scan_directions",
    "scan_directions",
    "scan_order",
]

SCAN_NUM_DIRECTIONS: dict[str, tuple[int, ...]] = {
    "raster": (2, 4),
    "zigzag": (2, 4),
    "hilbert": (2, 4, 8),
    "circular_hilbert": (2, 4, 8, 16),
    "horizontal": (2, 4),
    "vertical": (2, 4),
    "diagonal": (2, 4),
}
SCAN_KINDS: tuple[str, ...] = tuple(SCAN_NUM_DIRECTIONS)

# Grid corners in clockwise order, as (is_bottom, is_right).
_UPPER_LEFT, _UPPER_RIGHT, _LOWER_RIGHT, _LOWER_LEFT = (False, False), (False, True), (True, True), (True, False)
_CORNERS = (_UPPER_LEFT, _UPPER_RIGHT, _LOWER_RIGHT, _LOWER_LEFT)

Cell = tuple[int, int]
Rect = tuple[int, int, int, int]  # (top, bottom, left, right), bottom and right exclusive


def _check_size(value: int, name: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int >= 1, got {value!r}.")
    try:
        size = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int >= 1, got {type(value).__name__}.") from None
    if size < 1:
        raise ValueError(f"{name} must be >= 1 (every scan kind serves any height, width >= 1), got {size}.")
    return size


def _check_kind(kind: str, num_directions: int) -> None:
    if kind not in SCAN_NUM_DIRECTIONS:
        raise ValueError(f"kind must be one of {SCAN_KINDS}, got {kind!r}.")
    valid = SCAN_NUM_DIRECTIONS[kind]
    if isinstance(num_directions, bool) or num_directions not in valid:
        raise ValueError(f"num_directions for kind {kind!r} must be one of {valid}, got {num_directions!r}.")


# ---------------------------------------------------------------------------------------------
# Raster-like kinds
# ---------------------------------------------------------------------------------------------


def _grid(height: int, width: int) -> torch.Tensor:
    return torch.arange(height * width).view(height, width)


def _row_major(height: int, width: int) -> torch.Tensor:
    return torch.arange(height * width)


def _column_major(height: int, width: int) -> torch.Tensor:
    return _grid(height, width).t().reshape(-1)


def _row_snake(height: int, width: int) -> torch.Tensor:
    grid = _grid(height, width).clone()
    grid[1::2] = grid[1::2].flip(-1)
    return grid.reshape(-1)


def _column_snake(height: int, width: int) -> torch.Tensor:
    columns = _grid(height, width).t().clone()
    columns[1::2] = columns[1::2].flip(-1)
    return columns.reshape(-1)


def _anti_diagonal(height: int, width: int) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.argsort(((rows + cols) * height + rows).reshape(-1))


def _main_diagonal(height: int, width: int) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.argsort(((cols - rows + height - 1) * height + rows).reshape(-1))


# ---------------------------------------------------------------------------------------------
# Generalized Hilbert curve
# ---------------------------------------------------------------------------------------------


def _gilbert_cells(row: int, col: int, step_a: Cell, len_a: int, step_b: Cell, len_b: int) -> Iterator[Cell]:
    """Generalized Hilbert ("gilbert") curve over a rectangle of any size.

    Hand-written from the recursive construction of J. Cervený's generalized Hilbert
    curve. The rectangle has ``len_a`` cells along the unit step ``step_a`` (the
    travel axis) and ``len_b`` cells along the unit step ``step_b``, with its corner
    at ``(row, col)``. The curve starts at that corner; when ``len_b > 1`` and the parity
    rule below allows unit steps, it ends at the adjacent corner along the travel axis,
    ``(row, col) + (len_a - 1) * step_a`` (otherwise one cell before it).
    Long rectangles (``2 len_a > 3 len_b``) are cut into two halves along the travel
    axis; otherwise the curve goes half-way along ``b``, across the far part along
    ``a``, and back along ``-b``, like the three strokes of the Hilbert "U". Halves are
    made even where possible so that the sub-curves connect by unit steps.

    Consecutive cells are 4-neighbours whenever ``len_a`` is even or ``len_b`` is odd.
    Otherwise (odd travel length, even other side) a corner-to-adjacent-corner 4-neighbour
    path cannot exist (checkerboard parity: the path has an even number of cells but
    its ends have the same colour), and the curve takes exactly one diagonal step.
    """
    (a_row, a_col), (b_row, b_col) = step_a, step_b
    if len_b == 1:
        for i in range(len_a):
            yield row + i * a_row, col + i * a_col
        return
    if len_a == 1:
        for i in range(len_b):
            yield row + i * b_row, col + i * b_col
        return
    half_a, half_b = len_a // 2, len_b // 2
    if 2 * len_a > 3 * len_b:
        if half_a % 2 and len_a > 2:
            half_a += 1
        yield from _gilbert_cells(row, col, step_a, half_a, step_b, len_b)
        yield from _gilbert_cells(row + half_a * a_row, col + half_a * a_col, step_a, len_a - half_a, step_b, len_b)
        return
    if half_b % 2 and len_b > 2:
        half_b += 1
    back_a, back_b = (-a_row, -a_col), (-b_row, -b_col)
    yield from _gilbert_cells(row, col, step_b, half_b, step_a, half_a)
    yield from _gilbert_cells(row + half_b * b_row, col + half_b * b_col, step_a, len_a, step_b, len_b - half_b)
    far_row = row + (len_a - 1) * a_row + (half_b - 1) * b_row
    far_col = col + (len_a - 1) * a_col + (half_b - 1) * b_col
    yield from _gilbert_cells(far_row, far_col, back_b, half_b, back_a, len_a - half_a)


def _unit_path_possible(height: int, width: int, horizontal: bool) -> bool:
    """Whether a 4-neighbour path can join a corner to the adjacent corner along the travel axis."""
    travel, other = (width, height) if horizontal else (height, width)
    return travel % 2 == 0 or other % 2 == 1


def _default_travel(height: int, width: int) -> bool:
    """Travel axis of the main ``"hilbert"`` curve: the longer side, unless only the other one allows unit steps."""
    horizontal = width >= height
    if not _unit_path_possible(height, width, horizontal):
        horizontal = not horizontal
    return horizontal


def _hilbert_curve(height: int, width: int, corner: tuple[bool, bool], horizontal: bool) -> list[Cell]:
    """Generalized Hilbert curve over a ``height x width`` grid starting at ``corner``.

    ``horizontal`` selects the travel axis: the curve ends on the start corner's row
    (horizontal) or column (vertical) when the grid allows it.
    """
    is_bottom, is_right = corner
    row, col = (height - 1 if is_bottom else 0), (width - 1 if is_right else 0)
    step_down, step_right = (-1 if is_bottom else 1, 0), (0, -1 if is_right else 1)
    if horizontal:
        return list(_gilbert_cells(row, col, step_right, width, step_down, height))
    return list(_gilbert_cells(row, col, step_down, height, step_right, width))


def _to_flat(cells: list[Cell], width: int, offset: Cell = (0, 0)) -> list[int]:
    return [(offset[0] + r) * width + offset[1] + c for r, c in cells]


def _hilbert_directions(height: int, width: int) -> list[list[int]]:
    horizontal = _default_travel(height, width)
    variants = [(_UPPER_LEFT, horizontal), (_UPPER_LEFT, not horizontal)]
    variants += [(_LOWER_RIGHT, travel) for _, travel in variants]
    return [_to_flat(_hilbert_curve(height, width, corner, travel), width) for corner, travel in variants]


# ---------------------------------------------------------------------------------------------
# Circular-Hilbert (SP-Mamba)
# ---------------------------------------------------------------------------------------------


def circular_hilbert_center(height: int, width: int) -> Rect:
    """Central block of the Circular-Hilbert scan, as ``(top, bottom, left, right)`` (exclusive ends).

    The block has ``height // 2`` rows and ``width // 2`` columns, centred with
    ``top = (height - height // 2) // 2``, which is ``height // 4`` unless
    ``height % 4 == 3``; there the band above and below is equally thick instead
    (e.g. height 7: rows [2, 5), not [1, 4)). When the band thickness is odd,
    the extra ring lies below (rows) or right (columns). Columns likewise. For
    ``height == 1`` or ``width == 1`` the block is empty and the whole grid is band.

    Raises:
        TypeError, ValueError: when ``height`` or ``width`` is not an int >= 1.
    """
    height, width = _check_size(height, "height"), _check_size(width, "width")
    block_h, block_w = height // 2, width // 2
    top, left = (height - block_h) // 2, (width - block_w) // 2
    return top, top + block_h, left, left + block_w


def _shrink_towards(rect: Rect, center: Rect) -> Rect:
    """Peel one cell off every side of ``rect`` that has not yet reached ``center``."""
    top, bottom, left, right = rect
    c_top, c_bottom, c_left, c_right = center
    return top + (top < c_top), bottom - (bottom > c_bottom), left + (left < c_left), right - (right > c_right)


def _is_empty(rect: Rect) -> bool:
    top, bottom, left, right = rect
    return bottom <= top or right <= left


def _corner_cell(rect: Rect, corner: tuple[bool, bool]) -> Cell:
    top, bottom, left, right = rect
    return (bottom - 1 if corner[0] else top), (right - 1 if corner[1] else left)


def _perimeter_walk(rect: Rect, corner: tuple[bool, bool], clockwise: bool) -> tuple[list[Cell], bool]:
    """Cells of the perimeter of ``rect`` walked from ``corner``; returns ``(cells, is_cycle)``.

    A rectangle one cell thick has no cycle: it is walked from the end nearest ``corner``.
    """
    top, bottom, left, right = rect
    if bottom - top == 1 or right - left == 1:
        cells = [(r, c) for r in range(top, bottom) for c in range(left, right)]
        from_far_end = corner[1] if bottom - top == 1 else corner[0]
        return (cells[::-1] if from_far_end else cells), False
    cycle = [(top, c) for c in range(left, right)]
    cycle += [(r, right - 1) for r in range(top + 1, bottom)]
    cycle += [(bottom - 1, c) for c in range(right - 2, left - 1, -1)]
    cycle += [(r, left) for r in range(bottom - 2, top, -1)]
    start = cycle.index(_corner_cell(rect, corner))
    cycle = cycle[start:] + cycle[:start]
    if not clockwise:
        cycle = cycle[:1] + cycle[:0:-1]
    return cycle, True


def _ring_walk(rect: Rect, inner: Rect, corner: tuple[bool, bool], clockwise: bool) -> list[Cell]:
    """Cells of ``rect`` outside ``inner``, walked around the perimeter of ``rect``.

    When ``inner`` was peeled on only some sides, the ring is an arc of the perimeter:
    the cyclic walk is rotated to start where the arc starts, so that it runs unbroken.
    """
    walk, is_cycle = _perimeter_walk(rect, corner, clockwise)
    i_top, i_bottom, i_left, i_right = inner
    members = [not (i_top <= r < i_bottom and i_left <= c < i_right) for r, c in walk]
    if is_cycle and not all(members):
        arc_start = next(i for i in range(len(walk)) if members[i] and not members[i - 1])
        walk, members = walk[arc_start:] + walk[:arc_start], members[arc_start:] + members[:arc_start]
    return [cell for cell, member in zip(walk, members) if member]


def _next_corner(corner: tuple[bool, bool], clockwise: bool) -> tuple[bool, bool]:
    return _CORNERS[(_CORNERS.index(corner) + (1 if clockwise else -1)) % 4]


def _circular_hilbert_inward(height: int, width: int, corner: tuple[bool, bool], clockwise: bool) -> list[int]:
    """Outer rings from the outermost inward, then the central block's Hilbert curve."""
    center = circular_hilbert_center(height, width)
    rect: Rect = (0, height, 0, width)
    cells: list[Cell] = []
    while not _is_empty(rect) and rect != center:
        inner = _shrink_towards(rect, center)
        cells += _ring_walk(rect, inner, corner, clockwise)
        rect = inner
    order = _to_flat(cells, width)
    if _is_empty(center):
        return order
    top, bottom, left, right = center
    block_h, block_w = bottom - top, right - left
    if cells:
        # Start the curve at the block corner nearest to where the rings ended.
        end_r, end_c = cells[-1]
        corner = min(
            _CORNERS,
            key=lambda k: (end_r - _corner_cell(center, k)[0]) ** 2 + (end_c - _corner_cell(center, k)[1]) ** 2,
        )
    # Keep the rings' rotation sense: travel towards the next block corner cw / ccw.
    is_upper_left_or_lower_right = corner in (_UPPER_LEFT, _LOWER_RIGHT)
    horizontal = is_upper_left_or_lower_right == clockwise
    if not _unit_path_possible(block_h, block_w, horizontal):
        horizontal = not horizontal
    order += _to_flat(_hilbert_curve(block_h, block_w, corner, horizontal), width, offset=(top, left))
    return order


def _circular_hilbert_directions(height: int, width: int, num_corners: int) -> list[list[int]]:
    return [
        _circular_hilbert_inward(height, width, corner, clockwise)
        for corner in (_UPPER_LEFT, _UPPER_RIGHT, _LOWER_RIGHT, _LOWER_LEFT)[:num_corners]
        for clockwise in (True, False)
    ]


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def _forward_directions(height: int, width: int, kind: str, num_directions: int) -> list[torch.Tensor]:
    """The first ``num_directions // 2`` permutations of ``kind`` (the reverses are added by the caller)."""
    half = num_directions // 2
    if kind == "circular_hilbert":
        return [torch.tensor(p) for p in _circular_hilbert_directions(height, width, max(half // 2, 1))[:half]]
    if kind == "hilbert":
        return [torch.tensor(p) for p in _hilbert_directions(height, width)[:half]]
    builders = {
        "raster": (_row_major, _column_major),
        "zigzag": (_row_snake, _column_snake),
        "horizontal": (_row_major, _row_snake),
        "vertical": (_column_major, _column_snake),
        "diagonal": (_anti_diagonal, _main_diagonal),
    }[kind]
    return [build(height, width) for build in builders[:half]]


@lru_cache(maxsize=256)
def _cached_directions(height: int, width: int, kind: str, num_directions: int) -> tuple[torch.Tensor, torch.Tensor]:
    forward = _forward_directions(height, width, kind, num_directions)
    perms = torch.stack(forward + [p.flip(0) for p in forward]).long()
    return perms, inverse_permutation(perms)


def _validated_directions(height: int, width: int, kind: str, num_directions: int) -> tuple[torch.Tensor, torch.Tensor]:
    height, width = _check_size(height, "height"), _check_size(width, "width")
    _check_kind(kind, num_directions)
    return _cached_directions(height, width, kind, num_directions)


def scan_directions(height: int, width: int, kind: str = "raster", num_directions: int = 4) -> torch.Tensor:
    """The ``num_directions`` scan permutations of ``kind`` for an ``height x width`` grid.

    Args:
        height: grid height, >= 1.
        width: grid width, >= 1.
        kind: one of ``SCAN_KINDS``.
        num_directions: one of ``SCAN_NUM_DIRECTIONS[kind]``.

    Returns:
        LongTensor (K, L), ``K = num_directions``, ``L = height * width``, ordered
        ``[d0, ..., d(K/2 - 1), reverse(d0), ..., reverse(d(K/2 - 1))]``. A new tensor
        on every call.

    Raises:
        TypeError: when ``height`` or ``width`` is not an int.
        ValueError: for sizes < 1, an unknown ``kind`` or an unsupported ``num_directions``.
    """
    return _validated_directions(height, width, kind, num_directions)[0].clone()


def inverse_scan_directions(height: int, width: int, kind: str = "raster", num_directions: int = 4) -> torch.Tensor:
    """Inverses of :func:`scan_directions`, LongTensor (K, L): ``x_flat = seq[k][inv[k]]``.

    Same arguments and errors as :func:`scan_directions`; a new tensor on every call.
    """
    return _validated_directions(height, width, kind, num_directions)[1].clone()


def scan_order(height: int, width: int, kind: str = "raster") -> torch.Tensor:
    """The main scan order of ``kind`` (direction ``d0``), LongTensor (L,); a new tensor on every call.

    Same errors as :func:`scan_directions`.
    """
    return _validated_directions(height, width, kind, 2)[0][0].clone()


def inverse_permutation(perm: torch.Tensor) -> torch.Tensor:
    """Inverse of a permutation along the last dimension.

    Args:
        perm: integer tensor (..., L) whose last-dimension slices are permutations of ``range(L)``.

    Returns:
        LongTensor of the same shape with ``inv[..., perm[..., i]] == i``, so that
        ``seq[..., inv]`` undoes ``x[..., perm]``.

    Raises:
        TypeError: when ``perm`` is not an integer tensor.
        ValueError: when ``perm`` is 0-dimensional or not a permutation along its last dimension.
    """
    if not isinstance(perm, torch.Tensor) or perm.dtype.is_floating_point or perm.dtype.is_complex:
        raise TypeError(f"perm must be an integer torch.Tensor, got {getattr(perm, 'dtype', type(perm).__name__)}.")
    if perm.ndim == 0:
        raise ValueError("perm must have at least one dimension, got a 0-dimensional tensor.")
    perm = perm.long()
    positions = torch.arange(perm.shape[-1], device=perm.device).expand_as(perm)
    if not torch.equal(perm.sort(dim=-1).values, positions):
        raise ValueError(f"perm must be a permutation of range({perm.shape[-1]}) along its last dimension.")
    return torch.empty_like(perm).scatter_(-1, perm, positions)
