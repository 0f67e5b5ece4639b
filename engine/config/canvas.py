"""Where a playground run's pictures lie (engine/loop/learned.py draws them, the dashboard shows them): the square
of a 2D set and the line of a 1D set, and how many points a side each picture has."""

EXTENT = (-1.5, 1.5)  # the square (2D) or the line (1D) the pictures cover, both ends included
GRID = 128  # points a side of the square the decision regions are computed on
TILE = 32  # points a side of each neuron's tile
LINE = 256  # points of the line a 1D set's function is drawn on
