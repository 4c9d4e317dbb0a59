"""The one fit → predict step shared by leave_out (evaluate), section_consistency (qc) and the QC
widget's hold-out (evaluate.protocol.hold_out)."""

import numpy as np

from napari_inrst.evaluate.fitting import fit_predict, kept_sections
from napari_inrst.evaluate.protocol import hold_out
from napari_inrst.measure.baselines import KNN3D
from napari_inrst.synthetic.sample import sample_stack


def test_fit_predict_and_hold_out_leave_out_the_section_and_the_excluded_ones():
    stack, _ = sample_stack(misplace=False, n_genes=8, spot_spacing=150.0)
    stack[2].excluded = True
    assert kept_sections(stack, [4]) == [0, 1, 3, 5, 6, 7]
    fits = []

    def fit(st, secs):
        fits.append(list(secs))
        return KNN3D(st, secs)

    model, preds, secs_s = fit_predict(stack, fit, [0, 1], [3, 5])
    assert fits == [[0, 1]] and secs_s >= 0 and [p.shape for p in preds] == [(stack[3].n_obs, 8), (stack[5].n_obs, 8)]
    np.testing.assert_allclose(preds[1], model.predict(stack[5].xyz))
    res = hold_out(stack, fit, 4)
    assert fits[-1] == [0, 1, 3, 5, 6, 7] and res["index"] == 4 and res["kept"] == fits[-1]
    assert [r["gene"] for r in res["rows"]] == list(stack.genes) and res["pred"].shape == (stack[4].n_obs, 8)
    np.testing.assert_allclose(res["pred"], res["model"].predict(stack[4].xyz))
