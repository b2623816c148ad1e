"""Compiled loops over packed mask rows (numba): the exact counts of the searches, fused.

Rows are viewed as uint64 words (`words`). Each kernel reads every row it needs once
and keeps no temporaries: a numpy `a[ia] & b[ib]` then popcount writes and rereads each
gathered row several times, and the counts are memory-bound. All arithmetic is on exact
integers, so the results equal the numpy formulation bit for bit.

Row index -1 stands for an image-level label: every cell of the image is set.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

JIT = dict(cache=True, nogil=True)  # compiled once per machine into __pycache__

# The word loops below index 1-D row views (`r = a[i]`, `r[w]` for w from 0): LLVM then
# vectorizes the popcounts and ANDs. Indexing `a[i, w]` with a runtime row keeps numba's
# negative-index wrap on every access and the loop scalar, 3-6x slower on Broden rows.


@intrinsic
def _ctpop(typingctx, x):
    """LLVM's popcount of one uint64 (numba has no scalar popcount of its own)."""
    def codegen(context, builder, signature, args):
        return builder.call(builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)]), args)
    return types.uint64(types.uint64), codegen


def words(rows: np.ndarray) -> np.ndarray:
    """Packed rows (k, row_bytes) uint8 as (k, row_bytes / 8) uint64, without a copy."""
    return np.ascontiguousarray(rows).view(np.uint64)


@njit(**JIT)
def row_count(a, i):
    r, s = a[i], 0
    for w in range(len(r)):
        s += _ctpop(r[w])
    return s


@njit(**JIT)
def span(r0, r1, width):
    """The words holding image rows r0 <= r < r1 (cells r * width ...), half-open."""
    return (r0 * width) >> 6, min((r1 * width + 63) >> 6, 1 << 30)


@njit(**JIT)
def and_count_span(a, i, b, j, w0, w1):
    """|a[i] and b[j]| over words w0 <= w < w1 (the cells both can hold); j = -1: all ones."""
    s, ra = 0, a[i, w0:w1]
    if j < 0:
        for w in range(len(ra)):
            s += _ctpop(ra[w])
    else:
        rb = b[j, w0:w1]
        for w in range(len(ra)):
            s += _ctpop(ra[w] & rb[w])
    return s


@njit(**JIT)
def popcounts(a):
    """Set bits per row, (k,) int64."""
    out = np.empty(a.shape[0], np.int64)
    for i in range(a.shape[0]):
        out[i] = row_count(a, i)
    return out


@njit(**JIT)
def pair_counts(bits, pair_row, pair_box, img_pairs, img_ptr, ids, rows, where, width, out):
    """out[k, p] = |b_n and c_n| for every pair p = (c, n) with n in `ids` and every bitmap b;
    left as is where bitmap k lacks image n.

    `rows`: a tuple of the bitmaps' words; `where` (K, N): position of image n in bitmap
    k, -1 if absent. Walks image by image (`img_pairs[img_ptr[n]:img_ptr[n + 1]]`), so the
    K rows of an image stay in cache while its concepts' rows are read, each once and only
    the words of its bounding box's rows (concept by concept, the K rows were fetched again
    for every concept: 2x slower at Broden size)."""
    for t in range(len(ids)):
        n = ids[t]
        for q in range(img_ptr[n], img_ptr[n + 1]):
            p = img_pairs[q]
            r = pair_row[p]
            w0, w1 = span(np.int64(pair_box[p, 0]), np.int64(pair_box[p, 2]), width)
            for k in range(len(rows)):
                i = where[k, n]
                if i >= 0:
                    out[k, p] = and_count_span(rows[k], i, bits, r, w0, w1)


@njit(**JIT)
def _seek(ids, lo, n):
    """Smallest i >= lo with i == len(ids) or ids[i] >= n, for sorted ids with ids[:lo] < n.
    Gallops from lo, then bisects: a walk over increasing n pays O(log gap) a step, not
    O(log len(ids)) (scalar: numpy's searchsorted on a slice cost more than the search)."""
    hi, step = lo, 1
    while hi < len(ids) and ids[hi] < n:
        lo = hi + 1
        hi = lo + step
        step *= 2
    hi = min(hi, len(ids))
    while lo < hi:
        mid = (lo + hi) >> 1
        if ids[mid] < n:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(**JIT)
def unit_counts(bits, rows, images, c_box, c_ic, l_rows, l_ids, l_box, a_rows, a_pos, a_span, a_img, il, count_x,
                width):
    """(X, Y) = (|c and L|, |c and L and A|) over concept c's pairs (`rows`, `images` sorted,
    `c_box`; `c_ic` = |A_n and c_n| per pair) for a formula L (`l_rows`, sorted `l_ids`,
    `l_box`) and a unit A (`a_pos[n]`: A's row of image n or -1, `a_span`: the words from
    its first to its last set one, `a_img[n]` = |A_n|, `il[n]` = |A_n and L_n|).

    Reads c's rows only where L is set and both boxes meet, and only the words both cover;
    A's rows only within that and A's span, and only where the per-image counts leave
    Y_n open: it is 0 where A_n misses L_n or c_n,
    |A_n and L_n| where A_n lies in c_n, |A_n and c_n| where A_n lies in L_n. `count_x`
    False: X is not counted (0) and only the images where A meets L are visited."""
    x = y = 0
    i = 0  # merge position in l_ids: the walk goes forward
    for q in range(len(images)):
        n = images[q]
        if il[n] == 0 and not count_x:
            continue
        i = _seek(l_ids, i, n)
        if i == len(l_ids):
            break
        if l_ids[i] != n:
            continue
        r0 = max(np.int64(c_box[q, 0]), np.int64(l_box[i, 0]))
        r1 = min(np.int64(c_box[q, 2]), np.int64(l_box[i, 2]))
        if r1 <= r0 or min(c_box[q, 3], l_box[i, 3]) <= max(c_box[q, 1], l_box[i, 1]):
            continue  # the boxes do not meet
        w0, w1 = span(r0, r1, width)
        r, p = rows[q], a_pos[n]
        v0 = v1 = w0  # the words where Y is read: none unless the counts leave it open
        if p < 0 or il[n] == 0 or c_ic[q] == 0:
            pass
        elif c_ic[q] == a_img[n]:
            y += il[n]
        elif il[n] == a_img[n]:
            y += c_ic[q]
        else:
            v0, v1 = max(w0, a_span[p, 0]), min(w1, a_span[p, 1])
        if v1 > v0:
            dx, dy = _and3_count(l_rows, i, bits, r, a_rows, p, v0, v1)
            x, y = x + dx, y + dy
        else:
            v0 = v1 = w1
        if count_x:  # the words of the span outside [v0, v1)
            x += and_count_span(l_rows, i, bits, r, w0, v0) + and_count_span(l_rows, i, bits, r, v1, w1)
    return (x if count_x else 0), y


@njit(**JIT)
def _and3_count(l, i, c, j, a, p, w0, w1):
    """(|l[i] and c[j]|, |l[i] and c[j] and a[p]|) over words w0 <= w < w1, in one pass;
    j = -1: c is all ones."""
    x = y = 0
    rl, ra = l[i, w0:w1], a[p, w0:w1]
    if j < 0:
        for w in range(len(rl)):
            x += _ctpop(rl[w])
            y += _ctpop(rl[w] & ra[w])
    else:
        rc = c[j, w0:w1]
        for w in range(len(rl)):
            v = rl[w] & rc[w]
            x += _ctpop(v)
            y += _ctpop(v & ra[w])
    return x, y


@njit(**JIT)
def word_spans(a):
    """(k, 2): the first set word of each row and one past its last (rows are not empty)."""
    out = np.zeros((a.shape[0], 2), np.int64)
    for i in range(a.shape[0]):
        r = a[i]
        w0, w1 = 0, len(r)
        while w0 < w1 and r[w0] == 0:
            w0 += 1
        while w1 > w0 and r[w1 - 1] == 0:
            w1 -= 1
        out[i, 0], out[i, 1] = w0, w1
    return out


@njit(**JIT)
def overlaps(a_rows, a_pos, l_rows, l_ids, l_box, width, out):
    """out[n] = |A_n and L_n| for every image n of L (A's row `a_pos[n]`, -1: none), reading
    only the words of L's box; out is left as is elsewhere."""
    for i in range(len(l_ids)):
        n = l_ids[i]
        p = a_pos[n]
        if p >= 0:
            w0, w1 = span(np.int64(l_box[i, 0]), np.int64(l_box[i, 2]), width)
            out[n] = and_count_span(l_rows, i, a_rows, p, w0, w1)


@njit(**JIT)
def _apply(buf, row, op):
    """buf = row (op -1), buf OR row (0), buf AND row (1), buf AND NOT row (2)."""
    if op < 0:
        buf[:] = row
    elif op == 0:
        for w in range(len(buf)):
            buf[w] |= row[w]
    elif op == 1:
        for w in range(len(buf)):
            buf[w] &= row[w]
    else:
        for w in range(len(buf)):
            buf[w] &= ~row[w]


@njit(**JIT)
def formula_counts(bits, full, pair_row, pair_image, lo, hi, ops, a, a_pos):
    """(|L|, |A and L|, images where L is set, images where A and L is) for a left-deep
    formula L over leaves whose pairs are lo[t]:hi[t] (image-sorted; row -1 = `full`),
    joined by `ops` (0 OR, 1 AND, 2 AND NOT), and a unit A (`a`, `a_pos[n]`: A's row or
    -1). Builds each image's row of L in a one-row buffer: L is never stored."""
    k, nw = len(lo), len(full)
    cur = lo.copy()
    buf = np.empty(nw, np.uint64)
    n_l = n_inter = l_images = hit = 0
    while True:
        n = -1  # the next image any leaf holds
        for t in range(k):
            if cur[t] < hi[t] and (n < 0 or pair_image[cur[t]] < n):
                n = pair_image[cur[t]]
        if n < 0:
            break
        for t in range(k):
            op = -1 if t == 0 else ops[t - 1]
            if cur[t] < hi[t] and pair_image[cur[t]] == n:
                r = pair_row[cur[t]]
                cur[t] += 1
                if r < 0:
                    _apply(buf, full, op)
                else:
                    _apply(buf, bits[r], op)
            elif op == -1 or op == 1:  # an absent first leaf, or AND with one: empty
                buf[:] = 0
        s = 0
        for w in range(nw):
            s += _ctpop(buf[w])
        if s == 0:
            continue
        n_l += s
        l_images += 1
        p = a_pos[n]
        if p >= 0:
            ra, si = a[p], 0
            for w in range(nw):
                si += _ctpop(buf[w] & ra[w])
            n_inter += si
            hit += si > 0
    return n_l, n_inter, l_images, hit


@njit(**JIT)
def matches(a_ids, b_ids):
    """Positions (ia, ib) with a_ids[ia] == b_ids[ib], by a merge join of the sorted ids."""
    ia = np.empty(min(len(a_ids), len(b_ids)), np.int64)
    ib = np.empty_like(ia)
    m = i = j = 0
    while i < len(a_ids) and j < len(b_ids):
        if a_ids[i] < b_ids[j]:
            i += 1
        elif a_ids[i] > b_ids[j]:
            j += 1
        else:
            ia[m], ib[m] = i, j
            m, i, j = m + 1, i + 1, j + 1
    return ia[:m], ib[:m]


@njit(**JIT)
def and_popcounts(a, b, ia, ib):
    """|a[ia[q]] and b[ib[q]]| for each matched pair of rows q (`matches`), (len(ia),) int64."""
    out = np.empty(len(ia), np.int64)
    for q in range(len(ia)):
        out[q] = and_count_span(a, ia[q], b, ib[q], 0, a.shape[1])
    return out


# The row-set kernels below write into `out` allocated by the caller (masks.py, with numpy):
# numpy asks the OS for huge pages on large buffers, where an array made inside a kernel is
# faulted in 4 KiB at a time (over 10,000 faults for one Broden-size A and L).

@njit(**JIT)
def and_rows(a, b, ia, ib, out):
    """out[k] = a[ia[q]] AND b[ib[q]] for the matched positions q (`matches`) whose AND has a
    cell, in order; ia and ib are compacted alike, in place. Returns k, the rows kept."""
    k = 0
    for q in range(len(ia)):
        ra, rb, ro, nz = a[ia[q]], b[ib[q]], out[k], np.uint64(0)
        for w in range(len(ra)):
            v = ra[w] & rb[w]
            ro[w] = v
            nz |= v
        if nz != 0:
            ia[k], ib[k] = ia[q], ib[q]
            k += 1
    return k


@njit(**JIT)
def andnot_rows(a, b, ia, ib, out):
    """a AND NOT b into out (a's shape), b's rows ib[q] taken from a's rows ia[q] (`matches`);
    the rows left with a cell are packed to the front. Returns their positions in a."""
    for i in range(a.shape[0]):
        out[i] = a[i]
    for q in range(len(ia)):
        ro, rb = out[ia[q]], b[ib[q]]
        for w in range(len(ro)):
            ro[w] &= ~rb[w]
    keep = np.empty(a.shape[0], np.int64)
    k = 0
    for i in range(a.shape[0]):
        ro, nz = out[i], np.uint64(0)
        for w in range(len(ro)):
            nz |= ro[w]
        if nz != 0:
            out[k], keep[k] = out[i], i
            k += 1
    return keep[:k]


@njit(**JIT)
def _meet(p0, p1, p2, p3, q0, q1, q2, q3):
    """Area of the intersection of rectangles (p0, p1, p2, p3) and (q0, q1, q2, q3), each
    (r0, c0, r1, c1) half-open, given as int64 (int16 boxes would overflow)."""
    return max(min(p2, q2) - max(p0, q0), 0) * max(min(p3, q3) - max(p1, q1), 0)


@njit(**JIT)
def _overlap(p, i, q, j):
    """Area of the intersection of rectangles p[i] and q[j], (r0, c0, r1, c1) half-open."""
    return _meet(np.int64(p[i, 0]), np.int64(p[i, 1]), np.int64(p[i, 2]), np.int64(p[i, 3]),
                 np.int64(q[j, 0]), np.int64(q[j, 1]), np.int64(q[j, 2]), np.int64(q[j, 3]))


@njit(**JIT)
def estimate_terms(ids, img_ptr, concept, refine, a_img, il_img, ic, areas, box_l, rect_l,
                   area_c, box_c, rect_c, cells):
    """MMESH's per-pair corrections to the totals, summed per concept: (7, C) int64 (a view).

    Rows: OR's |A and F| and |F| corrections, AND's two, AND NOT's two, box overlap
    (the formulas of `search._estimates`). Walks L's images (`ids`, positions aligned
    with `areas`, `box_l`, `rect_l`) and their pairs, skipping concepts not to `refine`.
    The per-pair arrays (`concept`, `ic`, `area_c`, `box_c`, `rect_c`) are in image-major
    order (image n's pairs at img_ptr[n]:img_ptr[n + 1]), so the walk streams through them."""
    terms = np.zeros((len(refine), 7), np.int64)  # a concept's 7 terms side by side: one cache line or two
    for pos in range(len(ids)):
        n = ids[pos]
        a_n, il, a_l = np.int64(a_img[n]), np.int64(il_img[n]), np.int64(areas[pos])
        fl = a_l - il  # cells of L outside A_n
        l0, l1 = np.int64(box_l[pos, 0]), np.int64(box_l[pos, 1])
        l2, l3 = np.int64(box_l[pos, 2]), np.int64(box_l[pos, 3])
        rect_area = _overlap(rect_l, pos, rect_l, pos)
        for q in range(img_ptr[n], img_ptr[n + 1]):
            c = concept[q]
            if not refine[c]:
                continue
            i_c, a_c = np.int64(ic[q]), np.int64(area_c[q])
            c0, c1 = np.int64(box_c[q, 0]), np.int64(box_c[q, 1])
            c2, c3 = np.int64(box_c[q, 2]), np.int64(box_c[q, 3])
            ov_box = _meet(l0, l1, l2, l3, c0, c1, c2, c3)
            fc = a_c - i_c  # cells of c outside A_n
            shared_fp = min(fl, fc, ov_box)
            or_i = min(a_n, il + i_c)
            or_a = max(a_l, a_c, a_l + a_c - ov_box, or_i + fl + fc - shared_fp)
            hull = (max(l2, c2) - min(l0, c0)) * (max(l3, c3) - min(l1, c1))
            and_i = min(il, i_c)
            and_a = max(_overlap(rect_l, pos, rect_c, q), a_l + a_c - hull, and_i + max(fl + fc - (cells - a_n), 0))
            not_i = min(il, a_n - i_c)
            not_a = max(a_l - min(ov_box, a_c), rect_area - _overlap(rect_l, pos, box_c, q), not_i + fl - shared_fp)
            terms[c, 0] += or_i - il - i_c
            terms[c, 1] += or_a - a_l - a_c
            terms[c, 2] += and_i
            terms[c, 3] += and_a
            terms[c, 4] += not_i - il
            terms[c, 5] += not_a - a_l
            terms[c, 6] += ov_box
    return terms.T


@njit(**JIT)
def or_merge(a_ids, b_ids):
    """Merge of sorted image ids: (the union, positions of a's ids in it, of b's)."""
    ids = np.empty(len(a_ids) + len(b_ids), np.int64)
    pa, pb = np.empty(len(a_ids), np.int64), np.empty(len(b_ids), np.int64)
    m = i = j = 0
    while i < len(a_ids) or j < len(b_ids):
        if j == len(b_ids) or (i < len(a_ids) and a_ids[i] < b_ids[j]):
            ids[m], pa[i], i = a_ids[i], m, i + 1
        elif i == len(a_ids) or b_ids[j] < a_ids[i]:
            ids[m], pb[j], j = b_ids[j], m, j + 1
        else:
            ids[m], pa[i], pb[j], i, j = a_ids[i], m, m, i + 1, j + 1
        m += 1
    return ids[:m], pa, pb


@njit(**JIT)
def or_rows(a, b, pa, pb, out):
    """a OR b into out (one row per id of the union), a's rows at positions pa, b's at pb
    (`or_merge`); every row of out is written, so it needs no zeroing first."""
    from_a = np.zeros(out.shape[0], np.bool_)
    for i in range(len(pa)):
        out[pa[i]] = a[i]
        from_a[pa[i]] = True
    for j in range(len(pb)):
        if from_a[pb[j]]:
            ro, rb = out[pb[j]], b[j]
            for w in range(len(ro)):
                ro[w] |= rb[w]
        else:
            out[pb[j]] = b[j]


@njit(**JIT)
def pack_ranges(values, lo, hi, clip_lo, clip_hi, out):
    """Cells of each value row (B, cells) float32 with lo[j] < value < hi[j], packed into
    out[j] (K, B, row_bytes) uint8 in the masks' bit order ("big"); returns (K, B) bool,
    whether a packed row has any cell. Values are clipped to [clip_lo, clip_hi] first.
    Bounds are float32 and strict (a closed bound is moved to the next float32 first),
    so the comparisons are exact and the loop has no branches to vectorize around."""
    any_set = np.zeros((out.shape[0], values.shape[0]), np.bool_)
    for i in range(values.shape[0]):
        _pack_row(values[i], lo, hi, clip_lo, clip_hi, out, i, any_set)
    return any_set


@njit(**JIT)
def _pack_row(v, lo, hi, clip_lo, clip_hi, out, i, any_set):
    """One image's cells v (cells,) into out[:, i] and any_set[:, i], as `pack_ranges`."""
    n_cells = v.shape[0]
    for j in range(out.shape[0]):
        nz = np.uint8(0)
        for byte in range(n_cells // 8):
            acc = np.uint8(0)
            for x in range(8):
                c = min(max(v[8 * byte + x], clip_lo), clip_hi)
                acc |= np.uint8((c > lo[j]) & (c < hi[j])) << np.uint8(7 - x)
            out[j, i, byte] = acc
            nz |= acc
        if n_cells % 8:  # the last, partial byte
            acc = np.uint8(0)
            for x in range(n_cells % 8):
                c = min(max(v[n_cells - n_cells % 8 + x], clip_lo), clip_hi)
                acc |= np.uint8((c > lo[j]) & (c < hi[j])) << np.uint8(7 - x)
            out[j, i, n_cells // 8] = acc
            nz |= acc
        out[j, i, (n_cells + 7) // 8:] = 0  # the row's padding bytes
        any_set[j, i] = nz != 0


# ---------------------------------------------------------------- bilinear upsampling
# torch's CPU F.interpolate(mode="bilinear", align_corners=False) on (n, 1, h, w) float32,
# when it runs its generic ("non-separable") kernel, computes per output axis, in float32:
#   scale = float(n_in) / float(n_out)
#   src   = max(fma(scale, i + 0.5, -0.5), 0)         (the compiler fuses the multiply-add)
#   i0    = min(floor(src), n_in - 1), i1 = i0 + (i0 < n_in - 1)
#   l1    = min(max(src - i0, 0), 1), l0 = 1 - l1      (n_in == n_out: i0 = i1 = i, l0 = 1, l1 = 0)
# and per output cell, W first then H, each a fused multiply-add:
#   t_r = fma(x[r, c0], a0, x[r, c1] * a1) for r = r0, r1;   value = fma(t_r0, b0, t_r1 * b1).
# The functions below compute exactly that; tests/test_bitmaps.py checks the bits against
# F.interpolate, and `bitmaps` only uses them where a probe against torch agrees.


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c rounded once, float32 (LLVM's fma: the FMA instruction, or libm's fmaf)."""
    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fma = builder.module.declare_intrinsic("llvm.fma", [f32], ir.FunctionType(f32, [f32] * 3))
        return builder.call(fma, args)
    return types.float32(types.float32, types.float32, types.float32), codegen


@njit(**JIT)
def bilinear_axis(n_in, n_out):
    """Source indices (i0, i1) int64 and weights (l0, l1) float32 of one output axis."""
    i0, i1 = np.empty(n_out, np.int64), np.empty(n_out, np.int64)
    l0, l1 = np.empty(n_out, np.float32), np.empty(n_out, np.float32)
    scale = np.float32(n_in) / np.float32(n_out)
    one, half, zero = np.float32(1), np.float32(0.5), np.float32(0)
    for i in range(n_out):
        if n_in == n_out:
            i0[i], i1[i], l0[i], l1[i] = i, i, one, zero
            continue
        src = max(_fma(scale, np.float32(i) + half, -half), zero)
        k = min(np.int64(np.floor(src)), n_in - 1)
        lam = min(max(src - np.float32(k), zero), one)
        i0[i], i1[i] = k, k + (1 if k < n_in - 1 else 0)
        l0[i], l1[i] = one - lam, lam
    return i0, i1, l0, l1


@njit(**JIT)
def _bilinear_image(m, rows, cols, clip_lo, clip_hi, t, out):
    """Upsample one map m (h, w) into out (H * W,), each value then clipped to [clip_lo,
    clip_hi]: first each source row along W into t (h, W), then each output row from its
    two source rows (the same roundings as torch)."""
    r0, r1, b0, b1 = rows
    c0, c1, a0, a1 = cols
    W = len(c0)
    for r in range(m.shape[0]):
        for x in range(W):
            t[r, x] = _fma(m[r, c0[x]], a0[x], m[r, c1[x]] * a1[x])
    for y in range(len(r0)):
        p, q, u, v = t[r0[y]], t[r1[y]], b0[y], b1[y]
        for x in range(W):
            out[y * W + x] = min(max(_fma(p[x], u, q[x] * v), clip_lo), clip_hi)


@njit(**JIT)
def bilinear(maps, rows, cols):
    """maps (n, h, w) float32 -> (n, H * W) float32; `rows`, `cols`: `bilinear_axis` of H, W."""
    out = np.empty((maps.shape[0], len(rows[0]) * len(cols[0])), np.float32)
    t = np.empty((maps.shape[1], len(cols[0])), np.float32)
    inf = np.float32(np.inf)
    for i in range(maps.shape[0]):
        _bilinear_image(maps[i], rows, cols, -inf, inf, t, out[i])
    return out


@njit(**JIT)
def bilinear_bitmaps(maps, order, rows, cols, lo, hi, clip_lo, clip_hi, ids, out_ids, out_rows):
    """The K range bitmaps of the bilinear upsampling of maps[order] (maps (N, h, w) float32,
    order int64 positions), one image at a time, each value clipped to [clip_lo, clip_hi]
    and kept in range j iff lo[j] < value < hi[j] (as `pack_ranges`). Images with cells in
    range j are appended to out_ids[j] (their `ids`) and out_rows[j] ((N, row_bytes) uint8);
    returns the number appended per range. A range no raw value of the map reaches (with
    a slack for float32 rounding, as `bitmaps._bitmaps` skips images) is not looked at:
    bilinear values are convex combinations of the raw ones, so it would stay empty."""
    n_cells = len(rows[0]) * len(cols[0])
    filled = np.zeros(len(lo), np.int64)
    t = np.empty((maps.shape[1], len(cols[0])), np.float32)
    v = np.empty(n_cells, np.float32)
    flags = np.zeros(out_rows[0].shape[1] * 8, np.uint8)  # whole bytes; cells past n_cells stay 0
    words = flags.view(np.uint64)
    for n in order:
        _bilinear_image(maps[n], rows, cols, clip_lo, clip_hi, t, v)
        top, bottom = np.float64(maps[n].max()), np.float64(maps[n].min())
        for j in range(len(lo)):
            if (top < lo[j] - 1e-6 * (abs(np.float64(lo[j])) + abs(top))
                    or bottom > hi[j] + 1e-6 * (abs(np.float64(hi[j])) + abs(bottom))):
                continue
            for c in range(n_cells):
                flags[c] = (v[c] > lo[j]) & (v[c] < hi[j])
            f = filled[j]
            if _pack_flags(words, out_rows[j][f]):  # else row f is overwritten by the next image
                out_ids[j][f] = ids[n]
                filled[j] = f + 1
    return filled


@njit(**JIT)
def _pack_flags(flags, out):
    """Eight 0/1 bytes per word of `flags` as one byte of out (bit order "big"); whether any
    is set. The multiply moves byte k's bit to bit 63 - k, all other products stay below
    bit 56 or overflow past bit 63, so no carry reaches the top byte."""
    nz = np.uint64(0)
    for b in range(len(flags)):
        out[b] = (flags[b] * np.uint64(0x8040201008040201)) >> np.uint64(56)
        nz |= flags[b]
    return nz != 0
