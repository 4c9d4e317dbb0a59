"""Qt-free, napari-facing state: the view models the widgets in ``_qt/`` only wire and show."""
