"""What the "View field" widget shows, without Qt: the field, its genes (each with a colormap and
contrast limits), z in µm, plane or volume, the sampling, and the render requests they derive.

The widget's child widgets edit a :class:`ViewState` and follow its psygnal events (as
napari-animation's widgets follow its ``Animation`` model); the render controllers turn its
requests into layers. Everything here runs and is tested without a QApplication::

    state = ViewState()
    state.field_changed.connect(print)
    state.set_field(field, genes=["Slc17a6"], z=120.0)
    state.add_gene("Gad1")                         # genes_changed, colours from COLORMAP_CYCLE
    req = state.plane_request((cy, cx), zoom, (h, w))   # what to evaluate for this view
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from psygnal import Signal

from ..render.cache import LatentCache
from ..render.grids import VOLUME_MAX, VOLUME_MIN, PlaneGrid, plane_for_view, volume_grid
from ..render.plane import auto_contrast, gene_indices
from ..render.resample import OVERSAMPLE

#: colormap of the first gene; later genes take the cycle's colours in turn (additive blending)
FIRST_COLORMAP = "magma"
COLORMAP_CYCLE = ["magenta", "green", "cyan", "yellow", "red", "blue", "bop orange", "bop blue"]
COLORMAPS = ["magma", "viridis", "inferno", "plasma", "turbo", "gray", *COLORMAP_CYCLE]
RENDERINGS = ["mip", "attenuated_mip", "iso"]
#: memory for the values of one volume request (the grid is coarsened beyond it)
VOLUME_BUDGET = 1 << 30
#: latent cache of the field shown (switching gene in the same view is a small decode)
CACHE_BYTES = 512 * 2**20


def z_limits(field) -> tuple[float, float]:
    """The z range offered for ``field``: its z bounds padded by a quarter of their span (≥ 20 µm),
    so the plane can be moved beyond the first and last section."""
    lo, hi = (np.asarray(b, dtype=float) for b in field.bounds())
    span = max(hi[2] - lo[2], 1.0)
    pad = max(0.25 * span, 20.0)
    return float(lo[2] - pad), float(hi[2] + pad)


def field_summary(field) -> str:
    """One line about ``field``: its kind, gene count and bounds in µm."""
    if field is None:
        return "No field."
    lo, hi = (np.asarray(b, dtype=float) for b in field.bounds())
    return (f"{type(field).__name__}: {len(list(field.genes))} genes, x {lo[0]:.0f}…{hi[0]:.0f}, "
            f"y {lo[1]:.0f}…{hi[1]:.0f}, z {lo[2]:.0f}…{hi[2]:.0f} µm")


@dataclasses.dataclass(frozen=True)
class GenesChange:
    """What one edit did to the list of genes shown (the payload of ``genes_changed``)."""

    old: tuple
    new: tuple
    added: tuple = ()
    removed: tuple = ()
    replaced: tuple = ()  # ((old, new), …): the new gene takes the old one's place and layers


@dataclasses.dataclass(frozen=True)
class RenderRequest:
    """One plane or volume to evaluate: ``genes`` of ``field`` (``idx`` into its genes) on
    ``grid``; ``missing`` are the (gene, index) pairs whose contrast limits are still unknown."""

    field: object
    grid: object
    genes: tuple
    idx: tuple
    oversample: float | None
    missing: tuple = ()


class ViewState:
    """The View widget's state and its events (psygnal; payloads in brackets):

    ``field_changed`` [field] — a new field (or None); genes, contrast, z and its range were reset.
    ``genes_changed`` [:class:`GenesChange`] · ``colormap_changed`` [gene, colormap] ·
    ``contrast_changed`` [{gene: (lo, hi)}] · ``z_changed`` [z µm] · ``sampling_changed``
    [oversample or None] · ``ndisplay_changed`` [2 or 3] · ``volume_changed`` [resolution] ·
    ``rendering_changed`` [mode] · ``show_sections_changed`` [bool] · ``colorbars_changed`` [bool] ·
    ``plane_updated`` [z µm of the plane just put on screen, coarse or fine].
    """

    field_changed = Signal(object)
    genes_changed = Signal(object)
    colormap_changed = Signal(str, str)
    contrast_changed = Signal(dict)
    z_changed = Signal(float)
    sampling_changed = Signal(object)
    ndisplay_changed = Signal(int)
    volume_changed = Signal(int)
    rendering_changed = Signal(str)
    show_sections_changed = Signal(bool)
    colorbars_changed = Signal(bool)
    plane_updated = Signal(float)

    def __init__(self):
        self.field = None
        self.genes: list[str] = []
        self.colormaps: dict[str, str] = {}  # kept across fields: a gene keeps its colour
        self.contrast: dict[str, tuple[float, float]] = {}
        self.cache = LatentCache(CACHE_BYTES)
        self.z = 0.0
        self.z_range = (0.0, 0.0)
        self.ndisplay = 2
        self.band_limited = True
        self.resolution = 128
        self.rendering = RENDERINGS[0]
        self.show_sections = True
        self.colorbars = True
        self._shown_plane = None  # (grid key, genes) of the fine plane on screen

    # --- field ------------------------------------------------------------------------------
    def set_field(self, field, genes: Sequence[str] | None = None, *, z: float | None = None,
                  default_gene: str | None = None) -> None:
        """Show ``field`` (or None): ``genes`` first (default: ``default_gene`` when the field has
        it, else its first gene); z is ``z`` clipped to :func:`z_limits` (default: mid-depth)."""
        self.field = field
        self.cache.clear()
        self.contrast.clear()
        self.genes = []
        self._shown_plane = None
        if field is not None:
            names = list(field.genes)
            self.z_range = z_limits(field)
            lo, hi = (np.asarray(b, dtype=float) for b in field.bounds())
            z0 = (lo[2] + hi[2]) / 2 if z is None else z
            self.z = float(np.clip(z0, *self.z_range))
            first = list(genes) if genes else [default_gene if default_gene in names else names[0]]
            gene_indices(field, first)  # InputError naming an unknown gene
            for g in first:
                if g not in self.genes:
                    self.genes.append(g)
                    self._colour(g)
        self.field_changed.emit(field)

    def _colour(self, gene):
        if gene not in self.colormaps:
            n = len(self.genes)
            self.colormaps[gene] = FIRST_COLORMAP if n == 1 else COLORMAP_CYCLE[(n - 2) % len(COLORMAP_CYCLE)]

    # --- genes ------------------------------------------------------------------------------
    def _changed(self, old, **kw):
        self._shown_plane = None
        self.genes_changed.emit(GenesChange(tuple(old), tuple(self.genes), **kw))

    def add_gene(self, gene: str) -> bool:
        """Show ``gene`` too (InputError when the field lacks it); False when nothing changed."""
        if self.field is None or gene in self.genes:
            return False
        gene_indices(self.field, [gene])
        old = list(self.genes)
        self.genes.append(gene)
        self._colour(gene)
        self._changed(old, added=(gene,))
        return True

    def replace_gene(self, old_gene: str, gene: str) -> bool:
        """Show ``gene`` in place of ``old_gene`` (its colormap, its layers)."""
        if self.field is None or old_gene not in self.genes or gene in self.genes:
            return False
        gene_indices(self.field, [gene])
        old = list(self.genes)
        self.genes[old.index(old_gene)] = gene
        self.colormaps.setdefault(gene, self.colormaps.get(old_gene, FIRST_COLORMAP))
        self._changed(old, replaced=((old_gene, gene),))
        return True

    def remove_gene(self, gene: str) -> bool:
        if gene not in self.genes:
            return False
        old = list(self.genes)
        self.genes.remove(gene)
        self._changed(old, removed=(gene,))
        return True

    def set_genes(self, genes: Sequence[str]) -> None:
        """Show exactly ``genes``, in this order (one ``genes_changed``)."""
        if self.field is None:
            return
        genes = list(dict.fromkeys(genes))
        gene_indices(self.field, genes)
        old = list(self.genes)
        self.genes = genes
        for g in genes:
            self._colour(g)
        self._changed(old, added=tuple(g for g in genes if g not in old),
                      removed=tuple(g for g in old if g not in genes))

    def pick_gene(self, gene: str, selected: str | None = None) -> bool:
        """The user picked ``gene`` in the search box: it replaces ``selected`` (the gene selected
        in the list, default the first one), or is added when none is shown."""
        if self.field is None or gene not in self.field.genes or gene in self.genes:
            return False
        old = selected if selected is not None else (self.genes[0] if self.genes else None)
        if old is not None and old in self.genes:
            return self.replace_gene(old, gene)
        return self.add_gene(gene)

    def set_colormap(self, gene: str, cmap: str) -> None:
        if self.colormaps.get(gene) != cmap:
            self.colormaps[gene] = cmap
            self.colormap_changed.emit(gene, cmap)

    # --- contrast ---------------------------------------------------------------------------
    def missing_contrast(self, genes: Sequence[str]) -> tuple:
        """(gene, index) pairs of ``genes`` without contrast limits yet."""
        if self.field is None:
            return ()
        miss = [g for g in genes if g not in self.contrast]
        return tuple(zip(miss, gene_indices(self.field, miss))) if miss else ()

    def add_contrast(self, field, limits: dict) -> None:
        """Limits computed elsewhere (a worker) for ``field``; ignored when the field changed since,
        and never overriding limits already set."""
        if field is not self.field:
            return
        new = {g: tuple(lim) for g, lim in limits.items() if g not in self.contrast}
        if new:
            self.contrast.update(new)
            self.contrast_changed.emit(new)

    def ensure_contrast(self, genes: Sequence[str]) -> None:
        """Compute the missing limits of ``genes`` now (:func:`~napari_inrst.render.plane.auto_contrast`)."""
        miss = self.missing_contrast(genes)
        if miss:
            lims = auto_contrast(self.field, [i for _, i in miss], cache=self.cache)
            self.add_contrast(self.field, {g: lim for (g, _), lim in zip(miss, lims)})

    def reset_contrast(self) -> None:
        """Auto contrast: recompute the limits of the genes shown."""
        for g in self.genes:
            self.contrast.pop(g, None)
        self.ensure_contrast(self.genes)

    # --- z, display, sampling -----------------------------------------------------------------
    def set_z(self, z: float, *, force: bool = False) -> bool:
        """Move the plane to ``z`` µm (any value: between and beyond the sections); emits
        ``z_changed`` when it moved (or ``force``). True when it did."""
        z = float(z)
        if abs(z - self.z) < 1e-9 and not force:
            return False
        self.z = z
        self.z_changed.emit(z)
        return True

    def set_ndisplay(self, ndisplay: int) -> None:
        ndisplay = int(ndisplay)
        if ndisplay != self.ndisplay:
            self.ndisplay = ndisplay
            if ndisplay == 2:
                self._shown_plane = None
            self.ndisplay_changed.emit(ndisplay)

    @property
    def oversample(self) -> float | None:
        """Samples per finest field scale when band-limited sampling is on, else None (exact)."""
        return OVERSAMPLE if self.band_limited else None

    def set_band_limited(self, on: bool) -> None:
        on = bool(on)
        if on != self.band_limited:
            self.band_limited = on
            self._shown_plane = None
            self.sampling_changed.emit(self.oversample)

    def set_resolution(self, voxels: int) -> None:
        voxels = int(np.clip(int(voxels), VOLUME_MIN, VOLUME_MAX))
        if voxels != self.resolution:
            self.resolution = voxels
            self.volume_changed.emit(voxels)

    def set_rendering(self, mode: str) -> None:
        if mode not in RENDERINGS:
            raise ValueError(f"rendering must be one of {RENDERINGS}, got {mode!r}")
        if mode != self.rendering:
            self.rendering = mode
            self.rendering_changed.emit(mode)

    def set_show_sections(self, on: bool) -> None:
        if bool(on) != self.show_sections:
            self.show_sections = bool(on)
            self.show_sections_changed.emit(self.show_sections)

    def set_colorbars(self, on: bool) -> None:
        if bool(on) != self.colorbars:
            self.colorbars = bool(on)
            self.colorbars_changed.emit(self.colorbars)

    # --- render requests --------------------------------------------------------------------
    def view_grid(self, center_yx, zoom: float, canvas_hw, **kw) -> PlaneGrid | None:
        """The plane grid that fills a canvas (``canvas_hw`` px) at screen resolution for a 2D
        camera at ``center_yx`` (µm) and ``zoom`` (px/µm), at the current z; ``kw`` go to
        :func:`~napari_inrst.render.grids.plane_for_view`."""
        if self.field is None:
            return None
        return plane_for_view(self.z, tuple(center_yx)[-2:], zoom, canvas_hw, self.field.bounds(), **kw)

    def plane_request(self, center_yx, zoom: float, canvas_hw, *, force: bool = False,
                      frame=None) -> RenderRequest | None:
        """What the 2D view needs evaluated; None when nothing (no field or gene, 3D, nothing of the
        field in view, or — unless ``force`` — the same plane is already on screen). ``frame``: see
        :func:`~napari_inrst.render.grids.plane_for_view` (the other layers' extent)."""
        if self.field is None or not self.genes or self.ndisplay != 2:
            return None
        grid = self.view_grid(center_yx, zoom, canvas_hw, frame=frame)
        if grid is None:
            return None
        genes = tuple(self.genes)
        if not force and self._shown_plane == (grid.key(), genes):
            return None
        return RenderRequest(self.field, grid, genes, tuple(gene_indices(self.field, genes)), self.oversample,
                             self.missing_contrast(genes))

    def plane_on_screen(self, grid: PlaneGrid) -> None:
        """A plane (coarse or fine) of ``grid`` was put on screen: emits ``plane_updated``."""
        self.plane_updated.emit(float(grid.z))

    def plane_shown(self, grid: PlaneGrid, genes) -> None:
        """The fine plane of ``grid`` for ``genes`` is on screen: the same request is not made again."""
        self._shown_plane = (grid.key(), tuple(genes))

    def forget_plane(self) -> None:
        """Whatever is on screen, the next :meth:`plane_request` evaluates again."""
        self._shown_plane = None

    def volume_grid(self):
        """The volume grid of the genes shown at :attr:`resolution` voxels (longest axis)."""
        n = len(self.genes)
        return volume_grid(self.field.bounds(), int(self.resolution), budget_bytes=VOLUME_BUDGET,
                           bytes_per_voxel=4.0 * (n + 1))

    def volume_key(self, grid) -> tuple:
        """What identifies a rendered volume: its grid and the sampling."""
        return (grid.key(), self.oversample)

    def volume_request(self, genes: Sequence[str] | None = None, grid=None) -> RenderRequest | None:
        """The volume of ``genes`` (default: all shown) on ``grid`` (default :meth:`volume_grid`)."""
        if self.field is None or not self.genes:
            return None
        genes = tuple(self.genes if genes is None else genes)
        if not genes:
            return None
        grid = self.volume_grid() if grid is None else grid
        return RenderRequest(self.field, grid, genes, tuple(gene_indices(self.field, genes)), self.oversample,
                             self.missing_contrast(genes))

    def nearest_section(self, section_z: Sequence[float]) -> float | None:
        """The z of the section nearest the current z (None without sections)."""
        zs = [float(v) for v in section_z]
        return min(zs, key=lambda v: abs(v - self.z)) if zs else None
