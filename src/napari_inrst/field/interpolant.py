"""The local interpolant a field is blended with (numpy + scipy; no torch)."""

from __future__ import annotations

import numpy as np


class Interpolant:
    """The local interpolant a field is blended with: inverse-distance weighted mean of the ``k``
    nearest training cells/spots (3D, or 2D in x, y for one section: the baselines ``knn3d`` and
    ``knn2d`` of :mod:`napari_inrst.measure.baselines`), of their expression in a low-rank basis.

    ``xyz`` (n, 3) training coordinates (µm, in the network's frame: the stack frame less the
    field's ``origin``), ``coef`` (n, q) their centred (÷ std)
    expression in the orthonormal gene basis ``basis`` (genes × q), ``weight`` w ∈ [0, 1]: the
    model predicts (1 − w) · network + w · interpolant. Both parts are linear in a latent, so the
    blend is one latent (the network's r features, then the interpolant's q) and one linear
    decoder: rendering, caching and gene switching work unchanged.

    ``mix`` ∈ [0, 1] chooses the interpolant: 0 is the IDW mean above (``"knn"``), 1 is
    ``"sections"``: the mean of the ``k_sections`` nearest (x, y) cells in the nearest training
    section at or below the query and in the nearest at or above it, linear in z between the two
    (at a section's own z that section alone; beyond the first or last section, that section). At
    a held-out section midway between two kept ones this is the ``adjacent`` baseline exactly;
    unlike 3D kNN it never mixes cells of one section with the other by their in-plane distance,
    and it is continuous in z. In between, ``(1 − mix) · knn + mix · sections`` (both linear in
    the same coefficients, so still one interpolant of q features).
    """

    def __init__(self, xyz, coef, basis, weight: float, k: int = 5, dims: int = 3, mix: float = 0.0,
                 k_sections: int = 3):
        mix = float(mix)
        if not 0.0 <= mix <= 1.0:
            raise ValueError(f"interpolant mix must be in [0, 1], got {mix!r}")
        if mix > 0 and int(dims) != 3:
            raise ValueError("the sections interpolant needs 3D coordinates (dims 3)")
        self.mix = mix
        self.xyz = np.ascontiguousarray(xyz, dtype=np.float32)
        self.coef = np.ascontiguousarray(coef, dtype=np.float32)
        self.basis = np.ascontiguousarray(basis, dtype=np.float32)
        self.weight = float(weight)
        self.k = int(k)
        self.k_sections = int(k_sections)
        self.dims = int(dims)
        self._tree = None
        self._sections = None  # the sections interpolant: (sorted z, [(rows, 2D tree) per section])

    @property
    def kind(self) -> str:
        return "knn" if self.mix == 0 else "sections" if self.mix == 1 else "mix"

    @property
    def q(self) -> int:
        return int(self.coef.shape[1])

    def __call__(self, xyz) -> np.ndarray:
        """(m, 3) points → (m, q) interpolated coefficients."""
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        if len(xyz) == 0:
            return np.zeros((0, self.q), dtype=np.float32)
        if self.mix == 1:
            return self._by_sections(xyz)
        knn = self._knn(xyz)
        if self.mix == 0:
            return knn
        return (1.0 - self.mix) * knn + self.mix * self._by_sections(xyz)

    def _knn(self, xyz) -> np.ndarray:
        from scipy.spatial import cKDTree

        from ..measure.baselines import EPS_UM

        if self._tree is None:
            self._tree = cKDTree(self.xyz[:, :self.dims].astype(np.float64))
        k = int(min(self.k, len(self.xyz)))
        d, idx = self._tree.query(xyz[:, :self.dims], k=k)
        d = d.reshape(len(xyz), k)
        idx = idx.reshape(len(xyz), k)
        w = 1.0 / np.maximum(d, EPS_UM)
        w /= w.sum(axis=1, keepdims=True)
        out = np.zeros((len(xyz), self.q), dtype=np.float32)
        for j in range(k):
            out += w[:, j:j + 1].astype(np.float32) * self.coef[idx[:, j]]
        return out

    def _section_trees(self):
        if self._sections is None:
            from scipy.spatial import cKDTree

            zs, inv = np.unique(self.xyz[:, 2], return_inverse=True)
            trees = []
            for j in range(len(zs)):
                rows = np.flatnonzero(inv == j)
                trees.append((rows, cKDTree(self.xyz[rows, :2].astype(np.float64))))
            self._sections = (zs.astype(np.float64), trees)
        return self._sections

    def _section_mean(self, j: int, xy) -> np.ndarray:
        rows, tree = self._section_trees()[1][j]
        k = int(min(self.k_sections, len(rows)))
        _, idx = tree.query(xy, k=k)
        idx = rows[idx.reshape(len(xy), k)]
        out = np.zeros((len(xy), self.q), dtype=np.float32)
        for j2 in range(k):
            out += self.coef[idx[:, j2]]
        return out / np.float32(k)

    def _by_sections(self, xyz) -> np.ndarray:
        zs, _ = self._section_trees()
        qz = xyz[:, 2]
        tol = 1e-6 * max(1.0, float(np.ptp(zs)) if len(zs) > 1 else 1.0)
        above = np.minimum(np.searchsorted(zs, qz - tol, side="left"), len(zs) - 1)  # first z ≥ query
        below = np.maximum(np.searchsorted(zs, qz + tol, side="right") - 1, 0)  # last z ≤ query
        out = np.zeros((len(xyz), self.q), dtype=np.float32)
        for b, a in np.unique(np.column_stack([below, above]), axis=0):
            rows = np.flatnonzero((below == b) & (above == a))
            xy = xyz[rows, :2]
            if a == b:
                out[rows] = self._section_mean(int(a), xy)
                continue
            t = ((qz[rows] - zs[b]) / (zs[a] - zs[b])).clip(0.0, 1.0).astype(np.float32)[:, None]
            out[rows] = (1 - t) * self._section_mean(int(b), xy) + t * self._section_mean(int(a), xy)
        return out

    # --- a tensor group of the model file (see :data:`napari_inrst.field.model.TENSOR_GROUPS`)
    def tensors(self) -> dict:
        """Its tensors by short name (stored as ``interp.<name>``), numpy."""
        return {"xyz": self.xyz, "coef": self.coef, "basis": self.basis}

    def meta(self) -> dict:
        return {"weight": self.weight, "k": self.k, "dims": self.dims, "kind": self.kind, "mix": self.mix,
                "k_sections": self.k_sections, "n": int(len(self.xyz)), "q": self.q}

    @classmethod
    def shapes(cls, m: dict, n_genes: int, bad) -> dict:
        """Shapes of the tensors that ``m`` (its :meth:`meta`, read from a file) announces; its
        fields checked first (weight in [0, 1], k ≥ 1, dims 2 or 3, whole n and q)."""
        if not isinstance(m, dict):
            bad("'interp' must be a JSON object")
        try:
            w, k, dims, n, q = float(m["weight"]), m.get("k", 5), m.get("dims", 3), m["n"], m["q"]
        except (KeyError, TypeError, ValueError):
            bad("'interp' needs a numeric weight, n and q")
        if not (0.0 <= w <= 1.0):
            bad(f"'interp.weight' must be in [0, 1], got {w!r}")
        for name, v in (("k", k), ("n", n), ("q", q)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad(f"'interp.{name}' must be a whole number ≥ 1, got {v!r}")
        if dims not in (2, 3):
            bad(f"'interp.dims' must be 2 or 3, got {dims!r}")
        mix, ks = m.get("mix", 0.0), m.get("k_sections", 3)
        if isinstance(mix, bool) or not isinstance(mix, (int, float)) or not 0.0 <= float(mix) <= 1.0:
            bad(f"'interp.mix' must be a number in [0, 1], got {mix!r}")
        if float(mix) > 0 and dims != 3:
            bad("'interp.mix' > 0 (the sections interpolant) needs 'interp.dims' 3")
        if isinstance(ks, bool) or not isinstance(ks, int) or ks < 1:
            bad(f"'interp.k_sections' must be a whole number ≥ 1, got {ks!r}")
        return {"xyz": (n, 3), "coef": (n, q), "basis": (n_genes, q)}

    @classmethod
    def from_tensors(cls, t: dict, m: dict) -> "Interpolant":
        return cls(t["xyz"], t["coef"], t["basis"], float(m["weight"]), int(m.get("k", 5)), int(m.get("dims", 3)),
                   mix=float(m.get("mix", 0.0)), k_sections=int(m.get("k_sections", 3)))
