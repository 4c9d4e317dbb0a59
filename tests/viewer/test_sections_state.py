"""The Sections widget's view model without Qt: z, units, normalization applied or refused."""


def test_sections_state_applies_or_reports_and_changes_nothing(small):
    from napari_inrst.viewer.sections_state import SectionsState, parse_z

    stack0, _ = small
    stack = stack0.select(range(3))
    assert parse_z("0, 12.5; 40 55") == [0.0, 12.5, 40.0, 55.0]
    st = SectionsState()
    changed, failed = [], []
    st.changed.connect(changed.append)
    st.failed.connect(failed.append)
    assert not st.apply_spacing(5.0)  # no stack: nothing to do
    st.set_stack(stack)
    assert st.apply_spacing(20.0) and list(stack.z) == [0.0, 20.0, 40.0] and changed == ["z set: 0, 20, 40 µm"]
    assert not st.apply_z_text("0, 5, 5") and "share a z" in str(failed[-1]) and list(stack.z) == [0.0, 20.0, 40.0]
    assert not st.apply_z_text("0, a") and "not a list of numbers" in str(failed[-1])
    assert not st.apply_normalize(stack.normalize) and len(changed) == 1  # unchanged: no event
