"""Loss changes when units of a layer are replaced (ablation scores, Top Impact).

`Ablation(tail, acts, y)` holds one split: the layer's activations (pooled (N, U) when the
tail is linear, else maps (N, U, h, w)) and labels. `losses(units, V)` gives the
per-input cross-entropy (temperature 1.1) with unit units[j] replaced by V[:, j]; the
whole map of a replaced unit is set to that value, which on a linear tail is exactly
replacing the pooled value. Work is batched over (unit, input) pairs: on a linear tail
the logits change by a rank-one term, elsewhere only the tail is replayed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from nexplain.compute import Compute
from nexplain.errors import DataError
from nexplain.linear.tail import Tail

TEMPERATURE = 1.1
PAIRS_PER_BATCH = 256      # (unit, input) pairs per tail replay
LOGITS_PER_CHUNK = 1 << 24  # floats of (units, inputs, classes) per chunk on a linear tail
CACHE_FLOATS = 1 << 17      # the same, per chunk of the closed-form gradient: about 1 MB, in cache


class Ablation:
    """`y`: the targets, or None for the model's own predictions (a dataset without labels).
    `compute`: where the replay runs, its (unit, input) pairs per batch, and autocast.
    `progress`: a bar per replay of the tail over units (minutes on a large layer).
    `extras`: the tail's other inputs per input, batch first (a transformer MLP's residual stream)."""

    def __init__(self, tail: Tail, acts, y, temperature: float = TEMPERATURE, compute: Compute | None = None,
                 progress: bool = True, extras=()):
        self.compute, self.progress = compute or Compute(), progress
        self.batch = self.compute.batch_size or PAIRS_PER_BATCH
        self.tail, self.T = tail.to(self.compute.device), float(temperature)
        dtype = next(tail.parameters(), torch.zeros(())).dtype  # replay runs in the model's dtype
        self.acts = self.compute.to(torch.as_tensor(np.asarray(acts)).to(dtype))
        self.extras = [self.compute.to(torch.as_tensor(np.asarray(e)).to(dtype)) for e in extras]
        self.linear = tail.linear is not None
        if self.linear:  # a linear tail only sees the pooled value; float64 keeps the
            # rank-one updates as exact as a full recomputation
            self.acts = (self.acts.mean(dim=(2, 3)) if self.acts.ndim == 4 else self.acts).double()
        if not self.linear and self.acts.ndim != 4:
            raise DataError(f"the tail after {tail.layer!r} is not linear: ablation needs the layer's "
                            f"maps (N, U, h, w), got shape {tuple(self.acts.shape)}")
        with torch.no_grad():
            self.logits = self._plain_logits()
        self.y = self.logits.argmax(1) if y is None else self.compute.to(torch.as_tensor(np.asarray(y), dtype=torch.long))
        if len(self.y) != len(self.acts):
            raise DataError(f"{len(self.y)} labels for {len(self.acts)} inputs")
        with torch.no_grad():
            self.base = self._loss(self.logits)  # (N,) L(f(x), y)

    @property
    def n_units(self) -> int:
        return self.acts.shape[1]

    def _plain_logits(self) -> torch.Tensor:
        if self.linear:
            W, b = self.tail.linear
            return self.acts @ self.compute.to(W).double().T + self.compute.to(b).double()
        return torch.cat([self._replay(self.acts[s:s + self.batch], s) for s in range(0, len(self.acts), self.batch)])

    def _replay(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """The tail on inputs start.. of the split, their activations replaced by `x`."""
        extras = [e[start:start + len(x)] for e in self.extras]
        with self.compute.autocast():
            return self.tail(x, *extras).to(x.dtype)

    def _loss(self, logits: torch.Tensor) -> torch.Tensor:
        """Cross-entropy at temperature T over the last axis; logits (..., N, classes)."""
        lead = logits.shape[:-1]
        y = self.y.expand(lead) if logits.ndim > 2 else self.y
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]) / self.T, y.reshape(-1),
                               reduction="none").reshape(lead)

    def unit_chunk(self) -> int:
        """Units per call of `replaced_logits` that keep (units, inputs, classes) bounded."""
        return max(1, LOGITS_PER_CHUNK // max(1, self.logits.numel()))

    def replaced_logits(self, units, V) -> torch.Tensor:
        """(m, N, classes) logits with unit units[j] set to V[:, j] (V (N, m), may need grad)."""
        units = self.compute.to(torch.as_tensor(np.asarray(units), dtype=torch.long))
        V = self.compute.to(torch.as_tensor(V, dtype=self.acts.dtype))
        if self.linear:  # a rank-one change of the logits per unit
            W = self.compute.to(self.tail.linear[0]).double()
            delta = (V - self.acts[:, units]).T  # (m, N)
            return self.logits[None] + delta[:, :, None] * W[:, units].T[:, None, :]
        n, out = len(self.acts), []
        bar = tqdm(units, desc=f"replay after {self.tail.layer}", unit="unit", leave=False,
                   disable=not self.progress or len(units) < 2)
        for j, u in enumerate(bar):
            rows = []
            for b in range(0, n, self.batch):
                x = self.acts[b:b + self.batch]
                mask = F.one_hot(u, self.n_units).to(x.dtype)[None, :, None, None]
                rows.append(self._replay(x * (1 - mask) + V[b:b + self.batch, j][:, None, None, None] * mask, b))
            out.append(torch.cat(rows))
        return torch.stack(out)

    def losses(self, units, V) -> torch.Tensor:
        """(m, N) losses with unit units[j] set to V[:, j]."""
        V = self.compute.to(torch.as_tensor(V, dtype=self.acts.dtype))
        step = self.unit_chunk()
        return torch.cat([self._loss(self.replaced_logits(units[s:s + step], V[:, s:s + step]))
                          for s in range(0, len(units), step)])

    def deviation(self, units, V) -> np.ndarray:
        """sum over inputs of |L(f_k<-V) - L(f)|, per column of V."""
        with torch.no_grad():
            return (self.losses(units, V) - self.base).abs().sum(1).double().cpu().numpy()

    def score(self, units, V, V_mean, den: np.ndarray | None = None) -> np.ndarray:
        """1 - sum |L(f_k<-V) - L(f)| / sum |L(f_k<-mean) - L(f)| per unit; NaN when the
        mean replacement changes nothing. `den`: the denominators, if already known."""
        num = self.deviation(units, V)
        den = self.deviation(units, V_mean) if den is None else den
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, 1 - num / den, np.nan)

    def optim_scaling(self, units, S, steps: int = 100, lr: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
        """(c, d) per unit maximising the ablation score of c S + d here (Adam, from c=1, d=0).
        The denominator does not depend on (c, d), so the numerator is minimised."""
        S = self.compute.to(torch.as_tensor(np.asarray(S), dtype=self.acts.dtype))
        c = torch.ones(S.shape[1], dtype=S.dtype, device=S.device, requires_grad=True)
        d = torch.zeros(S.shape[1], dtype=S.dtype, device=S.device, requires_grad=True)
        opt = torch.optim.Adam([c, d], lr=lr)
        S_rows = S.T.contiguous().cpu().numpy()  # (m, N)
        for _ in range(steps):
            opt.zero_grad()
            if self.linear:  # the gradient in closed form, in cache-sized unit chunks (~10x autograd)
                G = self._numerator_grad(units, (S * c + d).detach()).T.cpu().numpy()  # (m, N)
                # numpy sums each unit's row alone (pairwise, one thread), where torch may split a
                # long reduced axis over threads by shape: a shard then gives one job's bytes
                c.grad = torch.from_numpy((G * S_rows).sum(1)).to(c.device)
                d.grad = torch.from_numpy(G.sum(1)).to(d.device)
            else:
                (self.losses(units, S * c + d) - self.base).abs().sum().backward()
            opt.step()
        return c.detach().double().cpu().numpy(), d.detach().double().cpu().numpy()

    def _numerator_grad(self, units, V) -> torch.Tensor:
        """d/dV of sum |L(f_k<-V) - L(f)| on a linear tail, (N, m): sign(L - L0) dL/dV with
        dL/dV = (softmax(logits / T) - onehot(y)) . W[:, k] / T."""
        W = self.compute.to(self.tail.linear[0]).double()
        units = self.compute.to(torch.as_tensor(np.asarray(units), dtype=torch.long))
        step = max(1, CACHE_FLOATS // max(1, self.logits.numel()))
        out = []
        for s in range(0, len(units), step):
            z = self.replaced_logits(units[s:s + step], V[:, s:s + step]) / self.T  # (m, N, C)
            lse = torch.logsumexp(z, -1, keepdim=True)
            loss = (lse - z.gather(-1, self.y.expand(z.shape[:2])[..., None]))[..., 0]
            Wk = W[:, units[s:s + step]].T / self.T  # (m, C)
            dl = ((z - lse).exp_() * Wk[:, None, :]).sum(-1) - Wk[:, self.y]
            out.append(torch.sign(loss - self.base) * dl)
        return torch.cat(out).T
