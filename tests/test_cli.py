import subprocess
import sys

import pytest

from napari_inrst.cli import COMMANDS, main


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "napari_inrst.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in ["demo", "fit", "predict", "align", "transforms", "render", "evaluate"]:
        assert cmd in out.stdout
    assert set(COMMANDS) == {"demo", "fit", "predict", "align", "transforms", "render", "evaluate"}


@pytest.mark.parametrize("cmd", COMMANDS)
def test_each_subcommand_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert cmd in capsys.readouterr().out
