"""The QC widget's view model without Qt: the synthetic sample (known truth), quick stand-in fits."""

import numpy as np
import pytest

from napari_inrst.synthetic.sample import rigid_matrix

from .conftest import run_to_end


def test_qc_state_holdout_panels_overview_and_domains(small):
    from napari_inrst.measure.baselines import KNN3D
    from napari_inrst.evaluate.fitting import FieldPredictor
    from napari_inrst.field.api import TruthField
    from napari_inrst.viewer.qc_state import QCState

    stack0, tissue = small
    stack = stack0.select(range(len(stack0)))
    for s in stack:
        s.adata = s.adata.copy()
        s.adata.obs["layer"] = tissue.programs(s.xyz)[:, :5].argmax(1).astype(str)
    st = QCState()
    events = {k: [] for k in ("stack", "excluded", "holdout", "consistency", "domains")}
    st.stack_changed.connect(events["stack"].append)
    st.excluded_changed.connect(lambda i, on: events["excluded"].append((i, on)))
    st.holdout_changed.connect(events["holdout"].append)
    st.consistency_changed.connect(events["consistency"].append)
    st.domains_changed.connect(events["domains"].append)
    st.set_stack(stack)
    assert events["stack"] == [stack] and st.default_holdout() == len(stack) // 2
    assert "layer" in st.annotation_columns() and len(st.section_labels()) == len(stack)
    fits = []
    st.fit_fn = lambda s_, secs: fits.append(list(secs)) or KNN3D(s_, secs)
    st.set_excluded(1)
    assert events["excluded"] == [(1, True)] and stack[1].excluded
    ov, text, flagged = st.overview()
    assert "excluded" in text and flagged == [] and ov["sections"][1]["excluded"]
    # hold-out: trained without it and without the excluded one, scored per gene
    res, msgs = run_to_end(st.holdout_job(3))
    assert fits == [[0, 2, 4, 5, 6, 7]] and msgs[0].startswith("training without")
    st.set_holdout(res)
    assert events["holdout"] == [res] and st.holdout == 3 and len(st.rows) == stack.n_genes
    p = st.panels("LayerB")
    g = stack.gene_index("LayerB")
    np.testing.assert_allclose(p["residual"], st.pred[:, g] - stack[3].X[:, g])
    assert p["shift"] > np.ptp(stack[3].xy[:, 0]) and np.allclose(p["data"][:, 0], stack[3].z)
    assert p["residual_max"] > 0 and p["titles"][0] == "measured LayerB" and st.panels("nope") is None
    assert "LayerB" in p["status"] and "Pearson" in st.holdout_title()
    with pytest.raises(ValueError, match="nothing left"):
        one = QCState()
        one.set_stack(stack.select([0]))
        one.holdout_job(0)
    # consistency: one fit per section, progress per section, flagged rows reach the overview
    stack[1].excluded = False
    stack[4].transform = rigid_matrix(25, center=tissue.center)
    seen = []
    rows, _ = run_to_end(st.consistency_job(progress=seen.append))
    assert "outlier sections: " + stack[4].name == st.set_consistency(rows)
    assert len(seen) == len(stack) and st.progress_text(seen[-1]).startswith(f"checked {len(stack)}/{len(stack)}")
    assert st.overview()[2] == [4] and events["consistency"] == [rows]
    # domains need a field with latent features: on the core's default grid, ARI on the hold-out
    assert not st.can_cluster()
    st.model = FieldPredictor(TruthField(tissue, stack.genes), stack.genes)
    st.n_domains, st.labels_key = 5, "layer"
    dom, _ = run_to_end(st.domains_job())
    st.set_domains(dom)
    assert dom.ari > 0.25 and events["domains"] == [dom] and "ARI vs 'layer'" in st.domains_ari_text()
    assert dom.labels.shape == dom.grid.shape and max(dom.grid.shape[1:]) == 48
    # a new stack drops every result
    st.set_stack(None)
    assert st.pred is None and st.model is None and st.consistency is None and st.rows == []


def test_qc_state_uncertainty_job_renders_volume_and_plane_off_the_ui_thread(small):
    """The ensemble job returns the volume and, for a given z, the plane too (the widget only shows
    them); the shared colour scale spans the volume's values inside tissue."""
    from napari_inrst.measure.baselines import KNN3D
    from napari_inrst.viewer.qc_state import QCState

    stack, _ = small
    st = QCState()
    st.set_stack(stack)
    class Boxed(KNN3D):  # a quick stand-in field with bounds (the members differ by their spots)
        def __init__(self, st_, secs):
            super().__init__(st_, secs)
            self.box = st_.bounds()

        def bounds(self):
            return self.box

    st.fit_fn = lambda s_, secs, seed: Boxed(s_, secs)
    st.members, st.inside_only = 2, False
    shown = []
    st.uncertainty_changed.connect(shown.append)
    res, msgs = run_to_end(st.uncertainty_job(z=float(stack[2].z)))
    assert msgs[0] == "training 2 ensemble members" and len(res[0].members) == 2
    plane_grid, img = res[4]
    assert plane_grid.z == float(stack[2].z) and img.ndim == 2 and np.isfinite(img).all()  # unmasked
    assert "median" in st.set_uncertainty(res)
    grid, data, inside = shown[-1]
    assert data.shape == grid.shape and inside.all() and st.uncertainty_contrast[0] <= float(data.max())
    assert run_to_end(st.rerender_job())[0][4] is None  # no z (3D display): no plane rendered
