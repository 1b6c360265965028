"""The volume viewer of the notebooks (colab_utils.viewer): which view each place gets, the
slider view's planes at the sliders' voxel, NiiVue's widgets and their links, the
fallbacks, and (extended) NiiVue drawing the volumes in a real headless browser.

The browser test (``python -m pytest -n 0 -m extended tests/test_viewer.py``)
serves a notebook that calls the viewer with Voila on 127.0.0.1 and opens it in Debian's
Chromium through Playwright; nothing is downloaded, and requests leaving the machine are
blocked and reported. It needs, besides the ``test`` extra::

    apt-get install -y chromium                     # /usr/bin/chromium (Debian's package)
    pip install -e ".[viewer]" playwright voila      # no `playwright install`: the system
                                                     # Chromium is used, no browser download

Missing any of them fails the test (it does not skip) and names what to install.
"""

import contextlib
import io
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from colab_utils import viewer

SHAPE = (40, 48, 32)


def _head(shape=SHAPE, voxel=2.0, origin=(-40.0, -48.0, -32.0)):
    """An ellipsoid whose intensity rises along x (the patient's right), on a grid."""
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = origin
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    xyz = ijk * voxel + np.asarray(origin)
    inside = ((xyz / np.array([30.0, 38.0, 26.0])) ** 2).sum(-1) < 1
    data = np.where(inside, 20 + 80 * (xyz[..., 0] + 40) / 80, 0).astype(np.float32)
    return data, affine, inside


@pytest.fixture
def volumes(tmp_path):
    """Input, "synthetic" (inverted) and a "real target" on another grid (3 mm, shifted)."""
    data, affine, inside = _head()
    paths = {"your T1": tmp_path / "scan.nii.gz", "synthetic T2": tmp_path / "synthetic.nii.gz",
             "real T2": tmp_path / "real.nii.gz"}
    nib.save(nib.Nifti1Image(data, affine), str(paths["your T1"]))
    nib.save(nib.Nifti1Image(np.where(inside, 120 - data, 0).astype(np.float32), affine),
             str(paths["synthetic T2"]))
    real, real_affine, _ = _head(shape=(28, 34, 24), voxel=3.0, origin=(-42.0, -50.0, -35.0))
    nib.save(nib.Nifti1Image(real, real_affine), str(paths["real T2"]))
    return paths


@pytest.fixture
def shown(monkeypatch):
    """What the viewer displays (widgets and still images), instead of a notebook."""
    record = {"widgets": [], "images": []}
    monkeypatch.setattr(viewer, "display_widget", record["widgets"].append)
    monkeypatch.setattr(viewer, "show_image", record["images"].append)
    return record


def _in(monkeypatch, kernel: bool, colab: bool):
    monkeypatch.setattr(viewer, "in_kernel", lambda: kernel)
    monkeypatch.setattr(viewer, "in_colab", lambda: colab)


def test_each_place_gets_its_viewer_and_falls_back_in_order():
    assert viewer.candidates("auto", kernel=False, colab=False) == ["static"]
    assert viewer.candidates("niivue", kernel=False, colab=True) == ["static"]
    assert viewer.candidates("auto", kernel=True, colab=False) == ["niivue", "static"]
    assert viewer.candidates("auto", kernel=True, colab=True) == ["niivue", "sliders", "static"]
    assert viewer.candidates("niivue", kernel=True, colab=False) == ["niivue", "sliders",
                                                                     "static"]
    assert viewer.candidates("sliders", kernel=True, colab=False) == ["sliders", "static"]
    assert viewer.candidates("static", kernel=True, colab=True) == ["static"]
    assert not viewer.in_kernel()  # pytest is no Jupyter kernel


def test_outside_a_kernel_the_still_figure_is_saved_and_shown(volumes, tmp_path, shown):
    from colab_utils import colab

    png = tmp_path / "still.png"
    assert viewer.show(volumes, save_to=png) == "static"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shown == {"widgets": [], "images": [png]}
    # The notebooks' entry point delegates (and returns nothing, so a cell shows nothing more).
    assert colab.view_volumes(volumes, save_to=tmp_path / "again.png", viewer="sliders") is None
    assert (tmp_path / "again.png").is_file()
    with pytest.raises(ValueError, match="viewer 'webgl': expected one of auto, niivue"):
        viewer.show(volumes, viewer="webgl")


def test_the_slider_view_draws_the_planes_through_the_sliders_voxel(volumes, monkeypatch):
    pytest.importorskip("ipywidgets")
    displayed = []
    monkeypatch.setattr(viewer, "_display_png", displayed.append)
    from colab_utils.viz import volume_centre

    rows = viewer.load_rows(volumes)
    assert [r[0] for r in rows] == list(volumes)
    assert all(r[1].shape == SHAPE and r[2] == (2.0, 2.0, 2.0) for r in rows)
    # The real T2 (3 mm, shifted) comes onto the scan's grid: the same anatomy, resampled.
    scan, real = rows[0][1], rows[2][1]
    core = (scan > 0) & (real > 0)
    assert core.sum() > 0.5 * (scan > 0).sum()
    assert np.abs(real[core] - scan[core]).mean() < 3.0

    widget = viewer.slider_widget(rows)
    sliders = {s.description: s for s in widget.children[:3]}
    assert {a: s.value for a, s in sliders.items()} == dict(zip("ijk", volume_centre(scan)))
    assert [s.max for s in sliders.values()] == [n - 1 for n in SHAPE]
    for point in [volume_centre(scan), (5, 30, 10), (39, 0, 31)]:
        for axis, value in zip("ijk", point):
            sliders[axis].value = value  # each change redraws, as a user's drag does
        figure = widget.result
        assert displayed[-1] is figure  # shown under the sliders
        assert figure._suptitle.get_text() == f"voxel {point}"
        axes = figure.get_axes()
        assert len(axes) == 9
        i, j, k = point
        for row, (title, data, _) in enumerate(rows):
            planes = {"axial": data[:, :, k], "coronal": data[:, j, :], "sagittal": data[i, :, :]}
            for column, (name, plane) in enumerate(planes.items()):
                ax = axes[3 * row + column]
                assert ax.get_title() == f"{title}: {name}"
                np.testing.assert_array_equal(ax.get_images()[0].get_array(), plane.T)


def test_niivue_shows_a_widget_per_volume_with_linked_crosshairs_then_the_still(
        volumes, tmp_path, shown, monkeypatch):
    ipyniivue = pytest.importorskip("ipyniivue")
    _in(monkeypatch, kernel=True, colab=False)
    png = tmp_path / "still.png"
    assert viewer.show(volumes, save_to=png) == "niivue"
    (box,), images = shown["widgets"], shown["images"]
    assert images == [png]  # widgets leave nothing in a saved notebook; the PNG does
    nvs = box.niivue
    assert len(nvs) == 3 and all(isinstance(nv, ipyniivue.NiiVue) for nv in nvs)
    for (title, path), nv, row in zip(volumes.items(), nvs, box.children):
        assert title in row.children[0].value and row.children[1] is nv
        (volume,) = nv.volumes
        assert Path(volume.path) == path and volume.colormap == "gray"
        assert nv.opts.slice_type == ipyniivue.SliceType.MULTIPLANAR
        assert nv.opts.multiplanar_layout == ipyniivue.MultiplanarType.ROW
        assert nv.opts.multiplanar_show_render == ipyniivue.ShowRender.NEVER
        # Linked both ways: each one's crosshair (and pan) moves every other one.
        assert set(map(id, nv.other_nv)) == {id(o) for o in nvs if o is not nv}
        assert nv.sync_opts["crosshair"] and nv.sync_opts["zoom_pan"]


def test_in_colab_niivue_turns_on_colabs_custom_widget_manager(volumes, shown, monkeypatch):
    pytest.importorskip("ipyniivue")
    calls = []
    output = types.ModuleType("google.colab.output")
    output.enable_custom_widget_manager = lambda: calls.append("enabled")
    colab_module = types.ModuleType("google.colab")
    colab_module.output = output
    monkeypatch.setitem(sys.modules, "google.colab", colab_module)
    monkeypatch.setitem(sys.modules, "google.colab.output", output)
    _in(monkeypatch, kernel=True, colab=True)
    assert viewer.show(volumes) == "niivue"
    assert "enabled" in calls and len(shown["widgets"]) == 1


def test_without_ipyniivue_colab_gets_sliders_and_jupyter_the_still(volumes, tmp_path, shown,
                                                                    monkeypatch, caplog):
    pytest.importorskip("ipywidgets")
    import ipywidgets

    monkeypatch.setitem(sys.modules, "ipyniivue", None)  # "not installed"
    _in(monkeypatch, kernel=True, colab=False)
    assert viewer.show(volumes, save_to=tmp_path / "a.png") == "static"
    assert shown["widgets"] == [] and shown["images"] == [tmp_path / "a.png"]
    assert "WARNING" not in caplog.text  # auto without the optional viewer is no fault
    _in(monkeypatch, kernel=True, colab=True)
    assert viewer.show(volumes, save_to=tmp_path / "b.png") == "sliders"
    assert isinstance(shown["widgets"][-1], ipywidgets.interactive)
    assert shown["images"] == [tmp_path / "a.png"]  # the sliders draw the figure themselves
    # A NiiVue asked for by name that fails to build says why and gives way.
    monkeypatch.delitem(sys.modules, "ipyniivue")

    def broken(_):
        raise RuntimeError("no WebGL here")

    monkeypatch.setattr(viewer, "niivue_widget", broken)
    _in(monkeypatch, kernel=True, colab=False)
    assert viewer.show(volumes, viewer="niivue") == "sliders"
    assert "niivue viewer is not available (RuntimeError: no WebGL here)" in caplog.text


# -- a real browser ------------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"
# Voila's page template asks a CDN for its icon font; that is Voila's, not the viewer's,
# and it is blocked like every request leaving 127.0.0.1.
VOILA_OWN = ("fontawesome",)


def _browser_requirements():
    missing = []
    if not Path(CHROMIUM).is_file():
        missing.append(f"Chromium at {CHROMIUM} (apt-get install -y chromium)")
    for module, package in [("playwright", "playwright"), ("voila", "voila"),
                            ("ipyniivue", "ipyniivue (the viewer extra: pip install -e "
                                          "\".[viewer]\")")]:
        try:
            __import__(module)
        except ImportError:
            missing.append(f"{package} (pip install {package.split()[0]})")
    if missing:
        pytest.fail("the browser test needs " + "; ".join(missing) + ". See the docstring of "
                    "tests/test_viewer.py (no `playwright install`: the system Chromium is "
                    "used).", pytrace=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pixels(locator) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(int)


def _grey(image: np.ndarray) -> np.ndarray:
    """Pixels of a grey-scale volume (not the black background, the red crosshair or the
    few pixels of the orientation letters)."""
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    return (np.abs(r - g) < 6) & (np.abs(g - b) < 6) & (r > 25)


def _first_tile(grey: np.ndarray) -> tuple[int, int, int, int]:
    """Columns and rows of the volume in the leftmost plane NiiVue drew (axial): the first
    run of columns with grey in more than 15 rows (an orientation letter has fewer),
    across gaps narrower than 10 pixels (the red crosshair)."""
    columns = np.flatnonzero(grey.sum(0) > 15)
    gaps = np.flatnonzero(np.diff(columns) > 10)
    end = columns[gaps[0]] if len(gaps) else columns[-1]
    rows = np.flatnonzero(grey[:, columns[0]:end + 1].sum(1) > 15)
    return int(columns[0]), int(end), int(rows[0]), int(rows[-1])


def _wait(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(0.5)


@contextlib.contextmanager
def _served(tmp_path, code: str):
    """A headless Chromium page showing a one-cell notebook (``code``) that Voila runs and
    serves on 127.0.0.1 with a token; on leaving, nothing was asked of the internet but
    Voila's own font, and the page raised no error."""
    _browser_requirements()
    from playwright.sync_api import sync_playwright

    notebook = {"cells": [{"cell_type": "code", "id": "view", "metadata": {},
                           "execution_count": None, "outputs": [], "source": code}],
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                            "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "view.ipynb").write_text(json.dumps(notebook))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTER_DATA_DIR=str(tmp_path / "data"), IPYTHONDIR=str(tmp_path / "ipython"),
               TF_CPP_MIN_LOG_LEVEL="2")
    log = tmp_path / "voila.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "voila", "view.ipynb", "--no-browser", f"--port={port}",
         "--Voila.ip=127.0.0.1", f"--token={token}"],
        cwd=tmp_path, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/?token={token}"
    outside, errors = [], []
    try:
        def serving():
            try:
                return urllib.request.urlopen(url, timeout=60).status == 200
            except OSError:
                assert server.poll() is None, f"Voila stopped:\n{log.read_text()}"
                return False

        _wait(serving, 120, "Voila to serve the notebook")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                # WebGL without a GPU: ANGLE on SwiftShader, Chromium's software renderer.
                args=["--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"])
            page = browser.new_page(viewport={"width": 1200, "height": 1000})

            def only_local(route):
                address = route.request.url
                if address.startswith((f"http://127.0.0.1:{port}/", "data:", "blob:")):
                    route.continue_()
                else:
                    outside.append(address)
                    route.abort()

            page.route("**/*", only_local)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(url, timeout=180_000)
            yield page
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    assert [u for u in outside if not any(own in u for own in VOILA_OWN)] == [], \
        "the viewer asked the internet for something"
    assert errors == [], f"errors in the page: {errors}"


def _call(volumes, viewer_name: str) -> str:
    paths = {title: str(path) for title, path in volumes.items()}
    return f"from colab_utils import colab\ncolab.view_volumes({paths!r}, viewer={viewer_name!r})"


@pytest.mark.extended
def test_niivue_draws_the_volumes_and_links_their_crosshairs_in_a_headless_browser(volumes,
                                                                                   tmp_path):
    with _served(tmp_path, _call(volumes, "niivue")) as page:
        canvases = page.locator("canvas")
        _wait(lambda: canvases.count() == 3, 180, "three NiiVue canvases")

        # Each canvas shows its volume: a large grey area of many levels, and the
        # synthetic one the inverse of the input where both are drawn.
        def drawn():
            images = [_pixels(canvases.nth(n)) for n in range(3)]
            grey = [_grey(im) for im in images]
            ok = all(g.mean() > 0.05 and len(np.unique(im[g][:, 0])) > 20
                     for g, im in zip(grey, images))
            return images if ok else None

        before = _wait(drawn, 120, "the volumes to be drawn")
        both = _grey(before[0]) & _grey(before[1])
        assert both.mean() > 0.05
        assert np.corrcoef(before[0][both][:, 0], before[1][both][:, 0])[0, 1] < -0.5
        # A click in the input's axial plane moves the crosshair of all three (the real
        # T2 on its own 3 mm grid included): linked through the kernel.
        x0, x1, y0, y1 = _first_tile(_grey(before[0]))
        assert x1 - x0 > 40 and y1 - y0 > 40, (x0, x1, y0, y1)
        canvases.nth(0).click(position={"x": x0 + 0.25 * (x1 - x0), "y": y0 + 0.25 * (y1 - y0)})

        def moved():
            after = [_pixels(canvases.nth(n)) for n in range(3)]
            changed = [(np.abs(a - b).sum(-1) > 30).mean() for a, b in zip(after, before)]
            return changed if min(changed) > 0.01 else None

        _wait(moved, 60, "the click to move every crosshair")


@pytest.mark.extended
def test_the_sliders_redraw_the_figure_in_a_headless_browser(volumes, tmp_path):
    import base64

    from colab_utils.viz import volume_centre

    rows = viewer.load_rows(volumes)
    i, j, k = volume_centre(rows[0][1])
    expected = io.BytesIO()  # the figure the kernel should draw once k is 5 lower
    viewer.slider_figure(rows, i, j, k - 5).savefig(expected, format="png")
    expected = "data:image/png;base64," + base64.b64encode(expected.getvalue()).decode()
    with _served(tmp_path, _call(volumes, "sliders")) as page:
        sliders = page.locator(".widget-slider")
        _wait(lambda: sliders.count() == 3, 180, "three sliders")
        figure = page.locator(".widget-output img")
        _wait(lambda: figure.count() == 1, 60, "the figure under the sliders")
        assert figure.get_attribute("src") != expected
        # Move k (the axial plane) with the keyboard, as a user can.
        sliders.nth(2).locator(".noUi-handle, .ui-slider-handle").first.focus()
        for _ in range(5):
            page.keyboard.press("ArrowLeft")
        readout = sliders.nth(2).locator(".widget-readout")
        _wait(lambda: readout.inner_text().strip() == str(k - 5), 30, f"k = {k - 5}")
        _wait(lambda: figure.count() == 1 and figure.get_attribute("src") == expected, 60,
              f"the figure through voxel {(i, j, k - 5)}")
