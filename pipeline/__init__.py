"""hyperguide: learned hyper-guidance for unfolded image restoration (the library).

Tensors in, tensors out: no CLI, no file layout, no experiment trackers in here.
"""
__version__ = "0.1.0"
