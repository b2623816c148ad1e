"""A dataset's cells grouped into atoms: the cells that hold exactly the same concepts.

Every formula over the concepts is true on whole atoms, so its size is a sum of atom
sizes, and its overlap with a unit's bitmap A a sum of A's cells per atom. The exact
search (`exact.py`) counts with a (G, C) membership matrix instead of reading masks:
G atoms is at most the number of distinct (image, concept set) pairs, a few per image.

No per-cell table is kept. A cell's code is the bit pattern of which of its image's k
concepts hold there (the image's pairs in concept order); images with the same k form a
group, and a group keeps its sorted (image, code) keys and their atoms. Counting A's cells
reads the concept rows of A's images again, as `ConceptStore.pair_counts` does.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from nexplain.compositional.masks import Bitmap, ConceptStore, popcount_rows
from nexplain.data.concepts import BITORDER

UNPACK_CELLS = 1 << 21  # cells x concepts unpacked at once: 2 MB of bools, ~20 MB of temporaries
WORD = 62               # concept bits per int64 code (the sign bit and one spare stay clear)


TABLE_KEYS = 1 << 20  # a group whose key space is at most this gets a direct lookup table (4 MB)


@dataclass(frozen=True)
class _Group:
    """Images with k concept pairs each: sorted keys (position in `images` << k | code) -> atom."""
    k: int
    images: np.ndarray  # sorted image ids
    keys: np.ndarray    # sorted int64
    atoms: np.ndarray   # global atom of each key
    table: np.ndarray | None = None  # key -> atom over the whole key space, where it is small

    def lookup(self, key: np.ndarray) -> np.ndarray:
        """The atoms of keys that exist in the group."""
        return self.table[key] if self.table is not None else self.atoms[np.searchsorted(self.keys, key)]


@dataclass(frozen=True)
class Atoms:
    member: object      # (G, C) scipy CSR, float64 0/1: concept c holds on atom g (an atom holds a few)
    cells: np.ndarray   # (G,) float64: cells of each atom in the whole dataset
    groups: tuple       # _Group per k > 0 (and per block of images, so keys fit one int64)
    empty: int          # the atom of cells holding no concept
    _store: object      # weakref to the ConceptStore: the atoms are cached per store

    @property
    def store(self) -> ConceptStore:
        store = self._store()
        if store is None:  # weak, as atoms_of caches atoms per store: keep the store while counting
            raise ValueError("the ConceptStore these atoms were built from no longer exists")
        return store

    @classmethod
    def from_store(cls, store: ConceptStore) -> Atoms:
        n_c, hw = store.n_concepts, store.shape[0] * store.shape[1]
        if store.n_concepts and np.diff(store.img_ptr).max(initial=0) > WORD:
            raise NotImplementedError(f"an image holds more than {WORD} concepts: the exact search's "
                                      "cell codes are one int64 word")
        k_of = np.diff(store.img_ptr)
        words = -(-n_c // 64)
        sets = [np.zeros((1, words), np.uint64)]  # the empty set, always an atom
        sizes = [np.array([0])]
        parts = []  # (k, images, keys, index into `sets` order)
        blocks = [(k, images[b:b + (1 << (WORD - k))]) for k in np.unique(k_of[k_of > 0]).tolist()
                  for images in [np.flatnonzero(k_of == k)] for b in range(0, len(images), 1 << (WORD - k))]
        for k, images in blocks:  # position << k | code stays below 2**62
            keys, counts = [], []
            for s, ids in _chunks(images, k, hw):
                code = _codes(store, ids, k)
                key = ((np.arange(len(ids)) + s)[:, None] << k | code).ravel()
                u, c = np.unique(key, return_counts=True)
                keys.append(u)
                counts.append(c)
            keys, counts = np.concatenate(keys), np.concatenate(counts)
            sets.append(_bitsets(store, images, k, keys, words))
            sizes.append(counts)
            parts.append((k, images, keys))
        sets, sizes = np.concatenate(sets), np.concatenate(sizes)
        uniq, to_global = np.unique(sets, axis=0, return_inverse=True)
        to_global = to_global.ravel()
        from scipy.sparse import csr_matrix

        member = csr_matrix(np.unpackbits(uniq.view(np.uint8), axis=1, bitorder="little")[:, :n_c].astype(np.float64))
        empty = int(to_global[0])
        cells = np.bincount(to_global, weights=sizes, minlength=len(uniq))
        cells[empty] += (k_of == 0).sum() * hw
        groups, at = [], 1
        for k, images, keys in parts:
            atoms = to_global[at:at + len(keys)]
            table = None
            if len(images) << k <= TABLE_KEYS:  # a gather instead of a binary search per cell
                table = np.zeros(len(images) << k, np.int32)
                table[keys] = atoms
            groups.append(_Group(k, images, keys, atoms, table))
            at += len(keys)
        return cls(member, cells, tuple(groups), empty, weakref.ref(store))

    @property
    def columns(self):
        """`member` as CSC: each concept's atoms."""
        hit = self.__dict__.get("_columns")
        if hit is None:
            hit = self.member.tocsc()
            object.__setattr__(self, "_columns", hit)
        return hit

    @property
    def pairs(self) -> np.ndarray:
        """(C, C) float64: |c and d| over the dataset."""
        hit = self.__dict__.get("_pairs")
        if hit is None:
            hit = (self.member.T @ self.member.multiply(self.cells[:, None]).tocsr()).toarray()
            object.__setattr__(self, "_pairs", hit)
        return hit

    @property
    def n_atoms(self) -> int:
        return len(self.cells)

    def count(self, A: Bitmap) -> np.ndarray:
        """(G,) float64: cells of A in each atom."""
        return self.count_many([A])[0]

    def count_many(self, bitmaps: list[Bitmap]) -> list[np.ndarray]:
        """`count` of several bitmaps (a unit's cluster ranges) from one pass over their
        images: each image's cell codes are computed once."""
        out = [np.zeros(self.n_atoms, np.float64) for _ in bitmaps]
        if not bitmaps:
            return out
        hw = self.store.shape[0] * self.store.shape[1]
        ids = np.unique(np.concatenate([b.ids for b in bitmaps]))
        where = [np.searchsorted(b.ids, ids) for b in bitmaps]
        has = [(w < len(b.ids)) & (b.ids[np.minimum(w, len(b.ids) - 1)] == ids) if len(b.ids) else
               np.zeros(len(ids), bool) for b, w in zip(bitmaps, where)]
        covered = np.zeros(len(ids), bool)
        for g in self.groups:
            pos = np.searchsorted(g.images, ids)
            hit = np.flatnonzero((pos < len(g.images)) & (g.images[np.minimum(pos, len(g.images) - 1)] == ids))
            covered[hit] = True
            for _, rows in _chunks(hit, g.k, hw):
                code = _codes(self.store, ids[rows], g.k)
                key = pos[rows][:, None] << g.k | code
                for b, w, h, acc in zip(bitmaps, where, has, out):
                    r = rows[h[rows]]
                    if len(r):
                        on = np.unpackbits(b.rows[w[r]], axis=1, count=hw, bitorder=BITORDER).view(bool)
                        acc += np.bincount(g.lookup(key[h[rows]][on]), minlength=self.n_atoms)
        for b, w, h, acc in zip(bitmaps, where, has, out):  # images with no concept: the empty atom
            r = np.flatnonzero(h & ~covered)
            if len(r):
                acc[self.empty] += popcount_rows(b.rows[w[r]]).sum()
        return out


def _chunks(items: np.ndarray, k: int, hw: int):
    """(offset, slice of items) of a size whose codes and unpacked bits stay small."""
    step = max(1, UNPACK_CELLS // (max(k, 8) * hw))  # the int64 codes are 8 bytes a cell
    for s in range(0, len(items), step):
        yield s, items[s:s + step]


def _codes(store: ConceptStore, ids: np.ndarray, k: int) -> np.ndarray:
    """(m, H*W) int64 code of every cell of images `ids` (k pairs each)."""
    hw = store.shape[0] * store.shape[1]
    pairs = store.img_pairs[store.img_ptr[ids][:, None] + np.arange(k)]  # (m, k), concept order
    row = store.pair_row[pairs]
    code = np.zeros((len(ids), hw), np.int64)
    for j in range(k):
        r = row[:, j]
        bits = np.ones((len(ids), hw), bool)  # image-level pairs (row -1) cover every cell
        pix = r >= 0
        if pix.any():
            bits[pix] = np.unpackbits(store.bits[r[pix]], axis=1, count=hw, bitorder=BITORDER).view(bool)
        code |= bits.astype(np.int64) << j
    return code


def _bitsets(store: ConceptStore, images: np.ndarray, k: int, keys: np.ndarray, words: int) -> np.ndarray:
    """The concept set of each key of a group, as a bitset over all concepts."""
    pos, code = keys >> k, keys & ((1 << k) - 1)
    concept = store.pair_concept[store.img_pairs[store.img_ptr[images[pos]][:, None] + np.arange(k)]]
    out = np.zeros((len(keys), words), np.uint64)
    rows = np.arange(len(keys))
    for j in range(k):
        has = ((code >> j) & 1).astype(np.uint64)
        c = concept[:, j]
        out[rows, c // 64] |= has << (c % 64).astype(np.uint64)
    return out


_ATOMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def atoms_of(store: ConceptStore) -> Atoms:
    """The store's atoms, built once and kept as long as the store lives."""
    if store not in _ATOMS:
        _ATOMS[store] = Atoms.from_store(store)
    return _ATOMS[store]
