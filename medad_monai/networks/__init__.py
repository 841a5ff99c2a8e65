from . import blocks
