"""Blocks shared by several detectors: the frozen ResNet encoder, the Half-FPN bottleneck, SS2D and its
selective state-space layers, norms, and a feature cache for frozen encoders."""

from .encoder import ENCODER_CHANNELS, ResNetFeatureEncoder, load_encoder_state_dict
from .feature_cache import FrozenFeatureCache
from .half_fpn import HALF_FPN_STYLES, HalfFPNBottleneck
from .norm import ChannelLayerNorm
from .ss2d import SS2D, SelectiveSSM
