"""tangpoem: train a character-level LSTM on Tang poems and write new ones with PaddlePaddle."""

__version__ = "0.1.0"

import warnings

from tangpoem.device import quiet_idle_threads

# before Paddle's import loads its OpenMP runtimes (see device.quiet_idle_threads)
quiet_idle_threads()

# Paddle warns about a missing C++ compiler cache on every import; it only matters for custom ops.
warnings.filterwarnings("ignore", message="No ccache found")
