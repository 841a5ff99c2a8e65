from .calibration import EncoderCalibration
from .checkpoint import BestModelSaver, EvaluatorBestMetric, LoadCheckpoint, ResumeTraining, latest_checkpoint
