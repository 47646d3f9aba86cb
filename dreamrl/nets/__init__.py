"""Neural network pieces: layers, distributions, encoder/decoder and heads."""
