"""`bench ear --server URL`: a running JupyterLab (here the local one, reached only by its URL and
token, as a GPU machine's would be) gets the notebook through its contents API and runs it."""

from __future__ import annotations

import pytest

from demon_nb.bench._browser import Lab, RemoteServer, new_page

pytestmark = pytest.mark.browser


def test_remote_server_uploads_and_runs_a_notebook(lab_server, browser, tmp_path):
    import nbformat

    remote = RemoteServer(f"{lab_server.base}/lab?token={lab_server.token}")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = tmp_path / "remote_check.ipynb"
    nbformat.write(nb, src)
    page = new_page(browser)
    try:
        lab = Lab(remote, page)
        assert lab.copy_notebook(src).name == "remote_check.ipynb"
        assert (lab_server.root / "remote_check.ipynb").is_file()      # it went through the API
        lab.open("remote_check.ipynb")
        lab.run_all()
        assert lab.output_text(0).strip() == "42"
    finally:
        page.context.close()
        lab_server.shutdown_sessions()


@pytest.mark.parametrize("url", ["http://127.0.0.1:8888/lab", "ftp://host/?token=x", "127.0.0.1:8888?token=x"])
def test_remote_server_needs_a_url_with_a_token(url):
    with pytest.raises(ValueError, match="server"):
        RemoteServer(url)
