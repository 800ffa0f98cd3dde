"""Compiled inner loops of post-processing (numba). Each gives exactly what the numpy or
scikit-image step it replaced gave: the flood and the ascent are tested against
scikit-image's watershed, and every shipped model's labels of a 4096² image were identical.

They release Python's lock (``nogil``), so post-processing strips on several threads run
them in parallel. Their signatures are fixed (any memory layout), so importing this module
loads them, once per process (~0.4 s), from the machine code numba caches beside this file
(or in its user cache where that is read-only); only the first import on a machine compiles
them (~3 s).
:func:`~nucleoseg.inference.postprocess.warm_up_kernels` does that ahead of need.
"""

from __future__ import annotations

import numpy as np

from .._compiled import kernel as _kernel

#: 4-neighbour offsets in the order scikit-image's watershed visits them: up, left, right,
#: down (ties between equal elevations are broken by this order).
_DR = (-1, 0, 0, 1)
_DC = (0, -1, 1, 0)




@_kernel(inline="always")
def _rank(bits, invert):
    """A ``uint64`` in the order of the ``float32`` whose bits are ``bits`` (negated with
    ``invert``; ``-0.0`` counted as ``0.0``, as comparisons count it)."""
    b = np.uint64(bits)
    if invert:
        b ^= np.uint64(1 << 31)
    if b & np.uint64(0x7FFFFFFF) == 0:
        b = np.uint64(0)
    if b >> np.uint64(31):
        return ~b & np.uint64(0xFFFFFFFF)
    return b | np.uint64(1 << 31)


@_kernel(inline="always")
def _push(key, where, size, k, w):
    """Binary min-heap of unique ``uint64`` keys (a hole sifts up, no swaps)."""
    child = size
    while child > 0:
        parent = (child - 1) >> 1
        if key[parent] <= k:
            break
        key[child], where[child] = key[parent], where[parent]
        child = parent
    key[child], where[child] = k, w
    return size + 1


@_kernel(inline="always")
def _pop(key, where, size):
    """Remove the smallest item; return (its key, its position, the new size). Ties (only
    between markers) leave as from a textbook heap that swaps (left child first)."""
    k0, w0 = key[0], where[0]
    size -= 1
    if size > 0:
        k, w = key[size], where[size]
        i = 0
        while True:
            c = 2 * i + 1
            if c >= size:
                break
            if c + 1 < size and key[c + 1] < key[c]:
                c += 1
            if key[c] >= k:
                break
            key[i], where[i] = key[c], where[c]
            i = c
        key[i], where[i] = k, w
    return k0, w0, size


@_kernel("void(uint32[:, :], boolean, int32[:, :], int32[:, :], int64[:], int64[:, :], "
         "int32[:, :])")
def flood_pieces(bits, invert, markers, pieces, piece_ids, boxes, labels):
    """``skimage.segmentation.watershed(elevation[box], markers[box], mask=piece)`` for every
    piece in ``piece_ids`` (its box ``boxes[k] = (row0, row1, col0, col1)``), written into
    ``labels`` on the piece's pixels; ``bits`` is the ``float32`` elevation viewed as
    ``uint32``, flooded from its highest values with ``invert``.

    One queue per piece, ordered as scikit-image (0.26) orders it: markers enter in raster
    order at their own elevation, a pixel takes its label when it is queued, at the higher
    of its elevation and its queuer's, and equal elevations leave in the order they
    entered (the key packs the elevation above a counter).
    """
    most = 0
    for k in range(boxes.shape[0]):
        most = max(most, (boxes[k, 1] - boxes[k, 0]) * (boxes[k, 3] - boxes[k, 2]))
    out = np.zeros(most, np.int32)
    key = np.empty(most, np.uint64)
    where = np.empty(most, np.int64)
    for k in range(boxes.shape[0]):
        r0, r1, c0, c1 = boxes[k, 0], boxes[k, 1], boxes[k, 2], boxes[k, 3]
        piece, wid = piece_ids[k], c1 - c0
        size = 0
        for r in range(r0, r1):
            for c in range(c0, c1):
                i = (r - r0) * wid + (c - c0)
                out[i] = 0
                if pieces[r, c] == piece and markers[r, c] > 0:
                    out[i] = markers[r, c]
                    size = _push(key, where, size, _rank(bits[r, c], invert) << np.uint64(32), i)
        count = np.uint64(1)
        while size > 0:
            top, i, size = _pop(key, where, size)
            level = top >> np.uint64(32)
            r, c = r0 + i // wid, c0 + i % wid
            for d in range(4):
                nr, nc = r + _DR[d], c + _DC[d]
                if nr < r0 or nr >= r1 or nc < c0 or nc >= c1 or pieces[nr, nc] != piece:
                    continue
                j = (nr - r0) * wid + (nc - c0)
                if out[j] != 0:
                    continue
                count += np.uint64(1)
                out[j] = out[i]
                size = _push(key, where, size,
                             (max(_rank(bits[nr, nc], invert), level) << np.uint64(32)) | count, j)
        for r in range(r0, r1):
            for c in range(c0, c1):
                if pieces[r, c] == piece:
                    labels[r, c] = out[(r - r0) * wid + (c - c0)]


@_kernel()
def _root(parent, x):
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:
        parent[x], x = root, parent[x]
    return root


@_kernel("int32[:, :](float32[:, :], boolean[:, :], int32[:, :])")
def ascent_labels(height, mask, seeds):
    """The kernel of :func:`~nucleoseg.inference.postprocess.ascent_basins` (its docstring
    says what it computes); the same labels as its vectorised form, ties included."""
    hgt, wid = mask.shape
    n = hgt * wid
    parent = np.empty(n, np.int32)  # set on mask pixels only, as every array here
    for r in range(hgt):
        for c in range(wid):
            if not mask[r, c]:
                continue
            p = r * wid + c
            parent[p] = p
            if seeds[r, c] > 0:
                continue  # a seed is its own end
            top = height[r, c]
            for d in range(4):
                nr, nc = r + _DR[d], c + _DC[d]
                if 0 <= nr < hgt and 0 <= nc < wid and mask[nr, nc] and height[nr, nc] > top:
                    top, parent[p] = height[nr, nc], nr * wid + nc
    out = np.empty(n, np.int32)
    stuck = []
    for r in range(hgt):
        for c in range(wid):
            if mask[r, c]:
                p = r * wid + c
                end = _root(parent, p)
                out[p] = seeds[end // wid, end % wid]
                if out[p] == 0 and end == p:
                    stuck.append(p)
    # ends on plateaus below a maximum take, one ring of pixels per pass, the label of
    # their highest labelled neighbour at least as high (all of a pass at once)
    got = np.zeros(len(stuck), np.int32)
    while len(stuck):
        for k in range(len(stuck)):
            p = stuck[k]
            r, c = p // wid, p % wid
            best, got[k] = -np.inf, 0
            for d in range(4):
                nr, nc = r + _DR[d], c + _DC[d]
                if not (0 <= nr < hgt and 0 <= nc < wid and mask[nr, nc]):
                    continue
                q = nr * wid + nc
                if out[q] > 0 and height[nr, nc] >= height[r, c] and height[nr, nc] > best:
                    got[k], best = out[q], height[nr, nc]
        left = []
        for k in range(len(stuck)):
            out[stuck[k]] = got[k]
            if got[k] == 0:
                left.append(stuck[k])
        if len(left) == len(stuck):
            break  # a maximum without a seed
        stuck = left
    labels = np.zeros((hgt, wid), np.int32)
    for r in range(hgt):
        for c in range(wid):
            if mask[r, c]:
                p = r * wid + c
                labels[r, c] = out[p] if out[p] > 0 else out[parent[p]]
    return labels


@_kernel()
def _scan_pairs(basins, height, n, key, level, fill):
    """Count (and with ``fill`` write) the pairs :func:`basin_pairs` returns."""
    hgt, wid = basins.shape
    k = 0
    for r in range(hgt):
        for c in range(wid):
            b = basins[r, c]
            if b == 0:
                continue
            for nr, nc in ((r, c + 1), (r + 1, c)):
                if nr < hgt and nc < wid:
                    o = basins[nr, nc]
                    if o != b and o > 0:
                        if fill:
                            key[k] = np.int64(min(b, o)) * (n + 1) + max(b, o)
                            level[k] = min(height[r, c], height[nr, nc])
                        k += 1
    return k


@_kernel("Tuple((int64[:], float32[:]))(int32[:, :], float32[:, :], int64)")
def basin_pairs(basins, height, n):
    """Every pair of 4-adjacent pixels in different basins (ids 1..n): the pair's key
    ``lo * (n + 1) + hi`` and its pass, the lower of the two heights."""
    key = np.empty(0, np.int64)
    level = np.empty(0, np.float32)
    count = _scan_pairs(basins, height, n, key, level, False)
    key = np.empty(count, np.int64)
    level = np.empty(count, np.float32)
    _scan_pairs(basins, height, n, key, level, True)
    return key, level


@_kernel("int32[:](int64[:], float32[:], int64[:], float32[:], float64)")
def merge_basins(pair_key, level, order, peak, h):
    """The union-find of :func:`~nucleoseg.inference.postprocess._group_basins` over the
    basin pairs ``pair_key = lo * (n + 1) + hi`` taken in ``order`` (highest pass first);
    returns each basin's group (a lookup table, 0 for 0)."""
    n = peak.size - 1
    tree = np.arange(n + 1)   # union-find of the component tree
    top = np.arange(n + 1)    # a tree root's highest maximum
    group = np.arange(n + 1)  # union-find of the markers
    for k in order:
        x, y = pair_key[k] // (n + 1), pair_key[k] % (n + 1)
        rx, ry = _root(tree, x), _root(tree, y)
        if rx == ry:
            continue
        if peak[top[rx]] < peak[top[ry]]:
            rx, ry, x, y = ry, rx, y, x  # rx: the component with the higher maximum
        # in double precision: a float32 difference could round across h
        if np.float64(peak[top[ry]]) - np.float64(level[k]) < h:  # y joins x's group
            group[_root(group, top[ry])] = _root(group, x)
        tree[ry] = rx
    lut = np.zeros(n + 1, np.int32)
    for i in range(1, n + 1):
        lut[i] = _root(group, i)
    return lut

