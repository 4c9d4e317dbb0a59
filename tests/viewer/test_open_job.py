"""The worker side of napari's File ▸ Open for large section files (no Qt)."""

import numpy as np


def _run(gen):
    """(return value, yielded messages) of a generator job."""
    seen = []
    while True:
        try:
            seen.append(next(gen))
        except StopIteration as stop:
            return stop.value, seen


def test_open_sections_job_reads_files_into_one_stack_and_joins(tmp_path, make_section):
    """The worker side of File ▸ Open: loose files make one stack with its layers' data; files
    opened later join the open stack (only the new sections' layers are made)."""
    from napari_inrst.viewer.open_job import open_sections_job, path_bytes

    paths = []
    for k in range(3):
        a = make_section(n=30, genes=("A", "B", "C"), seed=k)
        a.uns["z_um"] = 10.0 * k
        paths.append(tmp_path / f"s{k}.h5ad")
        a.write_h5ad(paths[-1])
    assert path_bytes(paths) == sum(p.stat().st_size for p in paths) == path_bytes([tmp_path])
    (first,), msgs = _run(open_sections_job(paths[:2]))
    assert any("s0.h5ad" in m for m in msgs) and first.joined is None
    assert first.stack.names == ["s0", "s1"] and len(first.layer_data) == 2
    (joined,), _ = _run(open_sections_job(paths[2:], old=first.stack, old_gene="B"))
    assert joined.joined is first.stack and joined.stack.names == ["s0", "s1", "s2"] and joined.gene == "B"
    (data, kw, kind), = joined.layer_data
    assert kind == "points" and kw["metadata"]["inrst_section"] == 2 and np.all(data[:, 0] == 20.0)


def test_open_sections_job_takes_paths_that_come_while_it_reads(tmp_path, make_section):
    """napari calls the reader once per file: paths that come while the first is read join the
    same stack (asked through ``more``, until it has been empty for ``settle_s``)."""
    from napari_inrst.viewer.open_job import open_sections_job

    paths = []
    for k in range(3):
        a = make_section(n=30, genes=("A", "B", "C"), seed=k)
        paths.append(tmp_path / f"s{k}.h5ad")
        a.write_h5ad(paths[-1])
    queue = [[paths[1]], [], [paths[2]]]  # one now, none, then the last (within settle_s)
    (opened,), _ = _run(open_sections_job(paths[:1], more=lambda: queue.pop(0) if queue else [], settle_s=0.5))
    assert opened.stack.names == ["s0", "s1", "s2"] and len(opened.layer_data) == 3 and not queue
