from .encoder import ENCODER_CHANNELS, ResNetFeatureEncoder, load_encoder_state_dict
from .half_fpn import HalfFPNBottleneck
from .prototypes import MedicalPrototypes, window_prototype_distance
from .spss import ChannelLayerNorm, SPSSBlock
from .ss2d import SS2D
