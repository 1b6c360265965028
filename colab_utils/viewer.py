"""Looking at volumes in a notebook: a WebGL viewer, slider-driven planes, or a still figure.

:func:`show` draws volumes (``{title: NIfTI path}``) one of three ways:

- ``"niivue"``: one NiiVue widget (``ipyniivue``, WebGL in the browser) per volume, each
  showing its axial, coronal and sagittal planes; their crosshairs are linked in
  millimetres (a click in one moves the others, a volume on another grid included).
  Needs ``ipyniivue`` (the ``viewer`` extra), a live kernel and a front end that shows
  custom widgets (Jupyter, Voila; Colab after ``enable_custom_widget_manager``). The
  still figure follows it: widgets leave nothing in a saved notebook, the PNG does.
- ``"sliders"``: the still figure (:func:`colab_utils.viz.orthogonal_views`) redrawn
  through the voxel three ipywidgets sliders choose.
- ``"static"``: the figure through the middle of the first volume's brain.

``"auto"`` takes NiiVue in a kernel when ``ipyniivue`` imports, else the sliders in
Colab (where widgets always show), else the still figure; outside a kernel (a script,
a terminal) only the still figure. A viewer that cannot start (not installed, or its
widget fails to build) falls back to the next, with a warning saying why.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .log import get_logger

logger = get_logger(__name__)


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules


def show_image(path) -> None:
    """Display a PNG in the notebook (or print its path outside one)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image at {path}")
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        display(Image(filename=str(path)))
    else:
        logger.info("image: %s", path)


VIEWERS = ("auto", "niivue", "sliders", "static")
NIIVUE_HEIGHT = 260  # pixels of one volume's row of three planes


def show(volumes: dict, save_to=None, viewer: str = "auto") -> str:
    """Show volumes side by side on the first one's grid; returns the viewer used.

    Args:
        volumes: ``{title: NIfTI path}``; the first sets the grid of the figures (another
            grid is resampled onto it by its affine; NiiVue shows each in its own).
        save_to: Where to write the still figure (PNG), whichever viewer is shown.
        viewer: ``"auto"``, ``"niivue"``, ``"sliders"`` or ``"static"`` (see the module).

    Raises:
        ValueError: An unknown ``viewer`` or no volumes.
    """
    from .viz import orthogonal_views, save_figure

    if viewer not in VIEWERS:
        raise ValueError(f"viewer {viewer!r}: expected one of {', '.join(VIEWERS)}")
    if not volumes:
        raise ValueError("expected at least one volume to show")
    rows = load_rows(volumes)
    figure = orthogonal_views(rows)
    if save_to is not None:
        save_figure(figure, save_to)
    for name in candidates(viewer, in_kernel(), in_colab()):
        if name == "static":
            _show_still(figure, save_to)
            return name
        try:
            widget = niivue_widget(volumes) if name == "niivue" else slider_widget(rows)
        except Exception as error:  # a viewer that cannot start gives way to the next
            quiet = viewer == "auto" and isinstance(error, ImportError)
            (logger.info if quiet else logger.warning)(
                "the %s viewer is not available (%s: %s); falling back", name,
                type(error).__name__, error)
            continue
        display_widget(widget)
        if name == "niivue":
            _show_still(figure, save_to)
        return name
    raise AssertionError("unreachable: every list of viewers ends with the still figure")


def candidates(viewer: str, kernel: bool, colab: bool) -> list[str]:
    """The viewers to try, in order, for a request in a place (see the module)."""
    if not kernel:
        return ["static"]
    if viewer == "auto":
        return ["niivue", "sliders", "static"] if colab else ["niivue", "static"]
    return {"niivue": ["niivue", "sliders", "static"], "sliders": ["sliders", "static"],
            "static": ["static"]}[viewer]


def in_kernel() -> bool:
    """True in a Jupyter kernel (a notebook, Voila, Colab, papermill), where widgets and
    rich output can be shown; False in a script or a terminal IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def load_rows(volumes: dict) -> list[tuple[str, np.ndarray, tuple]]:
    """``(title, data, voxel sizes)`` per volume, all on the first volume's grid (RAS)."""
    from .data.nifti import load_volume

    rows, grid = [], None
    for title, path in volumes.items():
        data, affine = load_volume(path)
        if grid is None:
            grid = (data.shape, affine)
        elif data.shape != grid[0] or not np.allclose(affine, grid[1], atol=1e-4):
            data = on_grid(data, affine, *grid)
        rows.append((title, data, tuple(np.linalg.norm(grid[1][:3, :3], axis=0))))
    return rows


def on_grid(data, affine, shape, grid_affine):
    """``data`` (on ``affine``) resampled onto a grid (trilinear, zero outside)."""
    from scipy import ndimage

    to_source = np.linalg.inv(affine) @ grid_affine  # grid voxel -> source voxel
    return ndimage.affine_transform(data, to_source[:3, :3], to_source[:3, 3], output_shape=shape,
                                    order=1, mode="constant", cval=0.0).astype(np.float32)


# -- sliders --------------------------------------------------------------------------------
def slider_figure(rows, i: int, j: int, k: int):
    """What the slider viewer draws for the sliders at voxel ``(i, j, k)``."""
    from .viz import orthogonal_views

    return orthogonal_views(rows, (i, j, k))


def slider_widget(rows):
    """Three sliders (``i``, ``j``, ``k``, starting in the brain's middle) and, below
    them, the figure through their voxel as a PNG (:func:`slider_figure`; the widget's
    ``result`` is the last figure drawn)."""
    import ipywidgets

    from .viz import volume_centre

    shape = rows[0][1].shape
    sliders = {axis: ipywidgets.IntSlider(value=c, min=0, max=n - 1, description=axis,
                                          continuous_update=False)
               for axis, c, n in zip("ijk", volume_centre(rows[0][1]), shape)}

    def draw(i, j, k):
        figure = slider_figure(rows, i, j, k)
        _display_png(figure)  # into the widget's output, replacing the last one
        return figure

    return ipywidgets.interactive(draw, **sliders)


# -- NiiVue ---------------------------------------------------------------------------------
def niivue_widget(volumes: dict):
    """One NiiVue per volume (its title above it, three planes in a row), crosshairs and
    panning linked both ways, in an ipywidgets ``VBox``; ``.niivue`` lists the viewers.

    The volume files travel to the browser through the widget's messages (nothing is
    fetched from the internet: the viewer's JavaScript ships in ``ipyniivue``)."""
    import html

    import ipyniivue
    import ipywidgets

    if in_colab():
        # Colab shows only its own widgets unless told otherwise.
        from google.colab import output  # type: ignore[import-not-found]

        output.enable_custom_widget_manager()
    viewers, rows = [], []
    for title, path in volumes.items():
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"NIfTI file not found: {path}")
        nv = ipyniivue.NiiVue(
            height=NIIVUE_HEIGHT, slice_type=ipyniivue.SliceType.MULTIPLANAR,
            multiplanar_layout=ipyniivue.MultiplanarType.ROW,
            multiplanar_show_render=ipyniivue.ShowRender.NEVER,
            # NiiVue's default orientation is the still figure's: the patient's right on
            # the image's right (its letters say so); the background is the figure's black.
            back_color=(0.0, 0.0, 0.0, 1.0))
        nv.load_volumes([{"path": str(path), "colormap": "gray"}])
        viewers.append(nv)
        rows.append(ipywidgets.VBox([ipywidgets.HTML(f"<b>{html.escape(str(title))}</b>"), nv]))
    for nv in viewers:
        others = [other for other in viewers if other is not nv]
        if others:
            nv.broadcast_to(others, {"crosshair": True, "zoom_pan": True})
    box = ipywidgets.VBox(rows)
    box.niivue = viewers
    return box


def display_widget(widget) -> None:
    """Show a widget in the notebook (a seam the tests replace)."""
    from IPython.display import display

    display(widget)


def _show_still(figure, save_to) -> None:
    """The still figure: its PNG when saved (or its path outside a notebook), else the
    figure itself in a kernel."""
    if save_to is not None:
        show_image(save_to)
    elif in_kernel():
        _display_png(figure)


def _display_png(figure) -> None:
    """Display a figure as a PNG, whatever matplotlib backend the kernel has."""
    import io

    from IPython.display import Image, display

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    display(Image(data=buffer.getvalue()))
