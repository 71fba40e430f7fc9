"""notebooks/explore.ipynb runs top to bottom on a small run made here."""

import json
import sys

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from conftest import ROOT, write_manifest
from curator.config import load_manifest
from curator.run import run_manifest

NOTEBOOK = ROOT / "notebooks" / "explore.ipynb"


def _kernel(tmp_path) -> KernelManager:
    """A kernel on this very interpreter (the venv running the tests), whatever `python3` kernel
    happens to be installed for the user: a kernel spec written to a temporary directory."""
    spec_dir = tmp_path / "kernels" / "curator-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "curator tests", "language": "python",
    }))
    ksm = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    return KernelManager(kernel_name="curator-test", kernel_spec_manager=ksm)


def test_explore_notebook_runs_top_to_bottom(tmp_path, server, monkeypatch):
    url = server(mix={"right": 3, "truncated": 1, "no_boxed": 1})
    m = write_manifest(tmp_path, url, n=2, problems=8, filters="[format]")
    run_manifest(load_manifest(m), progress=False)
    out = tmp_path / "out"
    monkeypatch.setenv("CURATOR_OUT", str(out))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws the plots

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, km=_kernel(tmp_path), timeout=120, resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError on the first failing cell

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "\n".join(json.dumps(o.get("data", o.get("text", ""))) for o in outputs)
    assert str(out) in text  # it opened the directory the variable names
    assert "format:truncated" in text  # reject reasons
    assert "<th>accepted</th><th>rejected</th>" in text and "truncated" in text  # side by side
    assert "image/png" in text  # the histograms


def test_notebook_defaults_to_the_demo_output():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert 'os.environ.get("CURATOR_OUT", "../out/demo")' in first_code.source
    # Stored without outputs, so the repository does not carry a stale run's numbers.
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
