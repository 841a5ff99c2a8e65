from .calibration import EncoderCalibration
from .checkpoint import LoadCheckpoint, ResumeTraining, latest_checkpoint
