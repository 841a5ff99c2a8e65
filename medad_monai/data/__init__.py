from .benchmarks import (
    DATASET_BUILDERS,
    build_bmad_datalist,
    build_busi_datalist,
    build_chexpert_datalist,
    build_datalist,
    build_head_ct_datalist,
    build_zhanglab_datalist,
)
from .datalist import load_anomaly_datalist, write_datalist
from .demo import DEMO_MODALITIES, DemoCohortParameters, ensure_demo_cohort, generate_demo_cohort
from .folders import IMAGE_SUFFIXES, common_root, folder_items
from .isolation import FAILURE_KEY, IsolatedDataset, collate_isolated, failure_reason, item_source
from .volumes import VolumeSliceDataset, extract_slice
