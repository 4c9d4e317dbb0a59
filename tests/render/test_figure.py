"""Figure composition (no Qt): genes mixed as inks on white stay visible; colorbars carry names and scale."""

import numpy as np

from napari_inrst.render.figure import colorbar_legend, colormap_ramp, inks_for, mix_on_white, tint_color


def test_two_genes_on_white_both_visible_overlap_darker_outside_transparent():
    a = np.zeros((4, 6), np.float32)
    b = np.zeros((4, 6), np.float32)
    a[:, :2] = 1.0  # gene A only on the left
    b[:, 4:] = 1.0  # gene B only on the right
    a[0, 3] = b[0, 3] = 1.0  # both at one pixel
    a[3, 3] = b[3, 3] = np.nan  # outside tissue
    inks = inks_for(["magma", "magenta"])  # the View widget's first two colormaps
    assert np.linalg.norm(np.subtract(*inks)) > 0.45  # two distinct inks
    rgba = mix_on_white(np.stack([a, b]), [(0, 1), (0, 1)], inks)
    np.testing.assert_allclose(rgba[1, 0, :3], inks[0], atol=1e-6)  # A's ink where only A is
    np.testing.assert_allclose(rgba[1, 5, :3], inks[1], atol=1e-6)  # B's ink where only B is
    np.testing.assert_allclose(rgba[1, 2, :3], 1.0)  # nothing expressed: white (paper)
    assert rgba[0, 3, :3].sum() < min(rgba[1, 0, :3].sum(), rgba[1, 5, :3].sum())  # overlap darker
    assert rgba[3, 3, 3] == 0 and rgba[1, 1, 3] == 1  # NaN everywhere → transparent


def test_inks_single_hue_colormaps_keep_their_hue():
    assert tint_color("green") == (0.0, 1.0, 0.0)
    assert tint_color("magma") is None and tint_color("gray") is None
    assert inks_for(["green", "cyan"]) == [(0.0, 1.0, 0.0), (0.0, 1.0, 1.0)]


def test_colorbar_legend_scales_and_carries_the_label():
    ramp = colormap_ramp("magma")
    one = colorbar_legend([("Gene1", ramp, (0.0, 2.0))], scale=1)
    four = colorbar_legend([("Gene1", ramp, (0.0, 2.0))], scale=4)
    assert 3.5 < four.shape[0] / one.shape[0] < 4.5  # the colorbar scales with the screenshot
    other = colorbar_legend([("Xyz9", ramp, (0.0, 2.0))], scale=4)
    band = slice(0, four.shape[0] // 8)  # the label row above the bar
    w = min(four.shape[1], other.shape[1])
    assert np.abs(four[band, :w].astype(int) - other[band, :w]).sum() > 0  # the gene name is drawn
    two = colorbar_legend([("A", ramp, (0, 1)), ("B", ramp, (0, 1))], scale=1)
    assert two.shape[1] > one.shape[1] * 1.2  # one bar per gene
