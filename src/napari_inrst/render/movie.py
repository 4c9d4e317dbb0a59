"""Movies of the viewer through the optional napari-animation plugin (.mp4, .gif or a folder of PNG
frames), written under a temporary name and renamed (nothing half-written)."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.atomic import make_parents, remove_folders, replace_dir, temp_dir_beside, unregister_temp
from .screenshot import viewer_camera




# --- movies --------------------------------------------------------------------------------
# Movies go through the napari-animation plugin (optional: the ``export`` extra): keyframes of the
# viewer state, interpolated and captured frame by frame from the canvas. napari-animation drives
# the canvas, so frames are captured on the main (GUI) thread; the viewer does not respond
# meanwhile. Formats: .mp4 (H.264 through imageio-ffmpeg, which napari-animation installs with its
# own ffmpeg binary), .gif (Pillow; identical consecutive frames are merged into one longer frame),
# or a path without suffix: a folder of PNG frames ``<name>/<name>_000000.png`` (no encoder needed).
MOVIE_MISSING = ("movies need the optional napari-animation plugin: pip install napari-animation "
                 "(then use the Movie button again)")


def animation_available() -> bool:
    try:
        import napari_animation  # noqa: F401
    except ImportError:
        return False
    return True


def _animation_class():
    try:
        from napari_animation import Animation
    except ImportError:
        raise RuntimeError(MOVIE_MISSING) from None
    return Animation


def movie_format(path) -> str:
    """'mp4', 'gif' or 'frames' (no suffix: a folder of PNG frames); InputError otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix == "":
        return "frames"
    if suffix in (".mp4", ".gif"):
        return suffix[1:]
    raise InputError(path, "movie output must end in .mp4 or .gif, or have no suffix (a folder of PNG frames)")


def _animate(anim, path, fps: int) -> Path:
    """``anim.animate`` into a temporary name beside ``path``, then renamed (nothing half-written)."""
    path = Path(path)
    fmt = movie_format(path)
    created = make_parents(path)
    tmpdir = temp_dir_beside(path)
    ok = False
    try:
        if fmt == "frames":
            # napari-animation writes <parent>/<stem>/<stem>_000000.png for a name without suffix
            anim.animate(str(tmpdir / path.name), fps=int(fps), canvas_only=True)
            made = tmpdir / path.name
            if not any(made.glob("*.png")):
                raise RuntimeError(f"{path}: napari-animation wrote no frames")
            replace_dir(made, path)
        else:
            target = tmpdir / f"movie.{fmt}"
            anim.animate(str(target), fps=int(fps), canvas_only=True)
            if not target.is_file():  # napari-animation fell back to PNG frames: no encoder
                raise RuntimeError(f"{path}: no {fmt} writer available (imageio-ffmpeg missing?); "
                                   "save a folder of PNG frames instead (a name without suffix)")
            os.replace(target, path)
        ok = True
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
        unregister_temp(tmpdir)
        if not ok:
            remove_folders(created)
    return path


@contextlib.contextmanager
def _connected(emitter, callback):
    if callback is None:
        yield
        return
    emitter.connect(callback)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            emitter.disconnect(callback)


def sweep_movie(viewer, path, start: dict, stop: dict, *, frames: int = 48, fps: int = 12, progress=None) -> Path:
    """A movie sweeping the viewer's dims linearly from ``start`` to ``stop`` (``{axis: world
    coordinate}``) in ``frames`` frames: two napari-animation keyframes, the dims point
    interpolated between them. ``progress(i, frames)`` is called as frames are captured. The dims
    point is restored afterwards."""
    Animation = _animation_class()
    movie_format(path)
    frames = int(frames)
    if frames < 2:
        raise InputError(path, f"a movie needs at least 2 frames, got {frames}")
    saved = tuple(viewer.dims.point)
    anim = Animation(viewer)
    axis = next(iter(start))
    a0, a1 = float(start[axis]), float(stop[axis])

    def on_point(*_):
        if progress is not None and a1 != a0:
            f = (float(viewer.dims.point[axis]) - a0) / (a1 - a0)
            progress(int(round(min(max(f, 0.0), 1.0) * (frames - 1))) + 1, frames)

    try:
        for ax, v in start.items():
            viewer.dims.set_point(int(ax), float(v))
        anim.capture_keyframe(steps=1)
        for ax, v in stop.items():
            viewer.dims.set_point(int(ax), float(v))
        anim.capture_keyframe(steps=frames - 1)
        with _connected(viewer.dims.events.point, on_point):
            return _animate(anim, path, fps)
    finally:
        for ax, v in enumerate(saved[:viewer.dims.ndim]):
            with contextlib.suppress(Exception):
                viewer.dims.set_point(ax, v)


def turntable_direction(azimuth_deg: float, elevation_deg: float):
    """View direction (z, y, x) of a camera at ``elevation`` above the x-y plane and ``azimuth``
    around the z axis (the stacking axis), looking at the volume's centre."""
    a, e = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
    return (-float(np.sin(e)), -float(np.cos(e) * np.sin(a)), -float(np.cos(e) * np.cos(a)))


def rotation_movie(viewer, path, *, frames: int = 72, fps: int = 24, elevation: float = 30.0,
                   progress=None) -> Path:
    """A turntable movie of the 3D view: one turn around the z (stacking) axis, seen from
    ``elevation`` degrees above the sections, z up; frame i at azimuth 360·i/frames (so the movie
    loops). Keyframes about 45° apart, or one per frame for short movies (napari-animation
    interpolates camera angles along the shortest rotation between keyframes). The camera is
    restored afterwards."""
    Animation = _animation_class()
    movie_format(path)
    frames = int(frames)
    if frames < 2:
        raise InputError(path, f"a movie needs at least 2 frames, got {frames}")
    if viewer.dims.ndisplay != 3:
        raise InputError(path, "a rotation movie needs the 3D view (show the 3D volume first)")
    cam = viewer_camera(viewer)
    saved = (tuple(cam.angles), cam.zoom, tuple(cam.center))
    segments = frames - 1 if frames <= 9 else max(8, int(np.ceil((frames - 1) / 9)))
    bounds = np.round(np.linspace(0, frames - 1, segments + 1)).astype(int)
    anim = Animation(viewer)
    count = [0]

    def on_angles(*_):
        count[0] += 1
        if progress is not None:
            progress(min(count[0], frames), frames)

    try:
        for j, b in enumerate(bounds):
            cam.set_view_direction(turntable_direction(360.0 * b / frames, elevation), up_direction=(1.0, 0.0, 0.0))
            anim.capture_keyframe(steps=max(1, int(b - bounds[j - 1])) if j else 1)
        with _connected(cam.events.angles, on_angles):
            return _animate(anim, path, fps)
    finally:
        cam.angles, cam.zoom, cam.center = saved
