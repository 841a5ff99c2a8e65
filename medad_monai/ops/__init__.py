from .filters import gaussian_blur, symmetric_indices
from .scan_orders import (
    SCAN_KINDS,
    SCAN_NUM_DIRECTIONS,
    circular_hilbert_center,
    inverse_permutation,
    inverse_scan_directions,
    scan_directions,
    scan_order,
)
from .selective_scan import available_backends, selective_scan_fn, selective_scan_ref
from .wavelet import haar_dwt2d, haar_iwt2d
