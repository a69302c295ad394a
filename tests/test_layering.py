"""The engine imports no widget and no concrete model (DESIGN.md section 10)."""

import subprocess
import sys


def test_engine_imports_no_widget_and_no_model():
    code = ("import sys\n"
            "import demon_nb.engine.ring, demon_nb.engine.propagation, demon_nb.engine.decode, demon_nb.engine.identity\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('ipywidgets', 'anywidget', 'bqplot', 'ipywebrtc', 'diffusers', 'transformers')"
            " or m.startswith('demon_nb.models.') or m.startswith('demon_nb.live.')]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"the engine pulled in: {out}"
