"""tangpoem: train a character-level LSTM on Tang poems and write new ones with PaddlePaddle."""

__version__ = "0.1.0"

import warnings

# Paddle warns about a missing C++ compiler cache on every import; it only matters for custom ops.
warnings.filterwarnings("ignore", message="No ccache found")
