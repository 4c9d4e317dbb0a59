"""Qt widgets (thin): everything here calls the Qt-free core."""
