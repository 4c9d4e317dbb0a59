import subprocess
import sys

import pytest

from napari_inrst.cli import COMMANDS, main

from ..conftest import combined_h5ad


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "napari_inrst.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    names = ["demo", "fit", "predict", "align", "transforms", "map", "render", "evaluate", "slice", "impute", "qc",
             "info"]
    for cmd in names:
        assert cmd in out.stdout
    assert set(COMMANDS) == set(names)


@pytest.mark.parametrize("cmd", COMMANDS)
def test_each_subcommand_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert cmd in capsys.readouterr().out


def _args(**kw):
    import argparse

    base = dict(z=None, normalize="log1p", gene_policy="intersection", unit_factor=1.0,
                section_key=None, z_key=None, _z_required=True)
    base.update(kw)
    return argparse.Namespace(**base)


def test_one_file_split_by_section_column(tmp_path, make_section):
    from napari_inrst.cli._common import load_stack

    path = combined_h5ad(tmp_path, make_section)
    st = load_stack(_args(sections=[str(path)], section_key="slice", z_key="zz", unit_factor=10.0))
    assert st.names == ["s2", "s1"] and list(st.z) == [10.0, 30.0]
    st = load_stack(_args(sections=[str(path)], section_key="slice", z=[0.0, 50.0]))
    assert st.names == ["s1", "s2"] and list(st.z) == [0.0, 50.0]


def test_split_without_z_names_the_file_and_the_labels(tmp_path, make_section):
    from napari_inrst import InputError
    from napari_inrst.cli._common import load_stack

    path = combined_h5ad(tmp_path, make_section)
    with pytest.raises(InputError, match=r"all\.h5ad: splits into 2 sections \(s1, s2\)"):
        load_stack(_args(sections=[str(path)], section_key="slice"))


def test_missing_z_is_a_clear_error(tmp_path, make_section):
    from napari_inrst import InputError
    from napari_inrst.cli._common import load_stack

    p = tmp_path / "a.h5ad"
    make_section().write_h5ad(p)  # records no z of its own
    with pytest.raises(InputError, match=r"a\.h5ad: records no z .*--z"):
        load_stack(_args(sections=[str(p)]))
