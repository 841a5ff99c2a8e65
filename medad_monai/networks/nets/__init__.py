from .sp_mamba import SPMamba
