"""Qt-free, napari-facing state: what the widgets show and change, as view models with psygnal
events (testable without a QApplication); the ``_qt`` widgets only wire them to Qt controls."""
