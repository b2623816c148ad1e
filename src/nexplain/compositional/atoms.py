"""A dataset's cells grouped into atoms: the cells that hold exactly the same concepts.

Every formula over the concepts is true on whole atoms, so its size is a sum of atom
sizes, and its overlap with a unit's bitmap A a sum of A's cells per atom. The exact
search (`exact.py`) counts with a (G, C) membership matrix instead of reading masks:
G atoms is at most the number of distinct (image, concept set) pairs, a few per image.

`Atoms.label` maps every cell to its atom (uint16 while G < 65536): 2 bytes a cell.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from nexplain.compositional.masks import Bitmap, ConceptStore
from nexplain.data.concepts import BITORDER

UNPACK_CELLS = 1 << 21  # cells x concepts unpacked at once: 2 MB of bools, ~20 MB of temporaries
WORD = 62               # concept bits per int64 code word (the sign bit stays clear)


@dataclass(frozen=True)
class Atoms:
    member: np.ndarray  # (G, C) float64 0/1: concept c holds on atom g (float: counts go through BLAS)
    cells: np.ndarray   # (G,) float64: cells of each atom in the whole dataset
    label: np.ndarray   # (N, H*W) atom of every cell

    @classmethod
    def from_store(cls, store: ConceptStore) -> Atoms:
        n, hw, n_c = store.n_images, store.shape[0] * store.shape[1], store.n_concepts
        label = np.zeros((n, hw), np.int32)  # local atom ids, then global ones
        k = np.diff(store.img_ptr)
        sets = [np.zeros((1, -(-n_c // 64)), np.uint64)]  # local atom 0: the empty set (images with no concept)
        sizes = [np.array([(k == 0).sum() * hw])]
        offset = 1
        for size in np.unique(k[k > 0]):
            imgs = np.flatnonzero(k == size)
            step = max(1, UNPACK_CELLS // (max(size, 8) * hw))  # the int64 codes are 8 bytes a cell
            for s in range(0, len(imgs), step):
                ids = imgs[s:s + step]
                local, bitsets = _local_atoms(store, ids, int(size))
                label[ids] = local + offset
                sets.append(bitsets)
                sizes.append(np.bincount(local.ravel(), minlength=len(bitsets)))
                offset += len(bitsets)
        sets = np.concatenate(sets)
        uniq, to_global = np.unique(sets, axis=0, return_inverse=True)
        g = len(uniq)
        to_global = to_global.ravel().astype(np.uint16 if g < 1 << 16 else np.int32)
        out = np.empty(label.shape, to_global.dtype)
        step = max(1, UNPACK_CELLS // hw)  # fancy indexing widens its index to int64: chunk it
        for s in range(0, n, step):
            out[s:s + step] = to_global[label[s:s + step]]
        label = out
        member = np.unpackbits(uniq.view(np.uint8), axis=1, bitorder="little")[:, :n_c].astype(np.float64)
        cells = np.bincount(to_global.ravel(), weights=np.concatenate(sizes), minlength=g)
        return cls(member, cells, label)

    @property
    def sparse(self):
        """`member` as a CSR matrix: an atom holds a few concepts, so products cost G x those."""
        hit = self.__dict__.get("_sparse")
        if hit is None:
            from scipy.sparse import csr_matrix
            hit = csr_matrix(self.member)
            object.__setattr__(self, "_sparse", hit)
        return hit

    @property
    def n_atoms(self) -> int:
        return len(self.cells)

    def count(self, A: Bitmap) -> np.ndarray:
        """(G,) float64: cells of A in each atom."""
        out = np.zeros(self.n_atoms, np.float64)
        hw = self.label.shape[1]
        step = max(1, UNPACK_CELLS // hw)
        for s in range(0, len(A.ids), step):
            on = np.unpackbits(A.rows[s:s + step], axis=1, count=hw, bitorder=BITORDER).view(bool)
            out += np.bincount(self.label[A.ids[s:s + step]][on], minlength=self.n_atoms)
        return out


def _local_atoms(store: ConceptStore, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Images `ids`, each with k (concept, image) pairs: per cell a local atom id, and per
    local atom its concept set as a bitset over all concepts, (L, ceil(C/64)) uint64."""
    hw = store.shape[0] * store.shape[1]
    pairs = store.img_pairs[store.img_ptr[ids][:, None] + np.arange(k)]  # (m, k), concept order
    concept, row = store.pair_concept[pairs], store.pair_row[pairs]
    on = np.ones((len(ids), k, hw), bool)  # image-level pairs (row -1) cover every cell
    pix = row >= 0
    if pix.any():
        on[pix] = np.unpackbits(store.bits[row[pix]], axis=1, count=hw, bitorder=BITORDER).view(bool)
    words = -(-k // WORD)
    code = np.zeros((len(ids), hw, words + 1), np.int64)
    code[:, :, 0] = np.arange(len(ids))[:, None]  # local atoms never span images
    for j in range(k):
        code[:, :, 1 + j // WORD] |= on[:, j, :].astype(np.int64) << (j % WORD)
    flat = code.reshape(-1, words + 1)
    if words == 1 and len(ids) < 1 << (WORD - k):  # the usual case: one int64 key per cell
        keys, inverse = np.unique((flat[:, 0] << k) | flat[:, 1], return_inverse=True)
        uniq = np.stack([keys >> k, keys & ((1 << k) - 1)], axis=1)
    else:
        uniq, inverse = np.unique(flat, axis=0, return_inverse=True)
    bitsets = np.zeros((len(uniq), -(-store.n_concepts // 64)), np.uint64)
    img = uniq[:, 0]
    for j in range(k):
        has = ((uniq[:, 1 + j // WORD] >> (j % WORD)) & 1).astype(np.uint64)
        c = concept[img, j]
        bitsets[np.arange(len(uniq)), c // 64] |= has << (c % 64).astype(np.uint64)
    return inverse.reshape(len(ids), hw), bitsets


_ATOMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def atoms_of(store: ConceptStore) -> Atoms:
    """The store's atoms, built once and kept as long as the store lives."""
    if store not in _ATOMS:
        _ATOMS[store] = Atoms.from_store(store)
    return _ATOMS[store]
