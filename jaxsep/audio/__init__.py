"""Audio ops: STFT/iSTFT, file I/O, resampling. Imports nothing else of jaxsep."""
