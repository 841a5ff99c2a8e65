"""Blocks shared by several detectors: the frozen ResNet encoder, the Half-FPN bottleneck, SS2D, norms."""

from .encoder import ENCODER_CHANNELS, ResNetFeatureEncoder, load_encoder_state_dict
from .half_fpn import HalfFPNBottleneck
from .norm import ChannelLayerNorm
from .ss2d import SS2D
