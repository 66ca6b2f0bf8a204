"""tangpoem: train a character-level LSTM on Tang poems and write new ones with PaddlePaddle.

Importing it changes nothing in the process: the commands (`python -m tangpoem.X`) set up threads and
warnings themselves (`device.prepare_command`).
"""

__version__ = "0.1.0"
