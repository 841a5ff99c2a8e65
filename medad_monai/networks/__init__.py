from . import blocks, nets
