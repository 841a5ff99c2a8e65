"""Embedded demo cohort: synthetic brain MRI and head CT subjects, with lesion masks, made from the
MNI ICBM152 2009 template that ships in the ``nilearn`` wheel.

``docs/demo_cohort.md`` specifies the model (anatomy, intensities, lesions, slices, splits, layout)
and what the cohort stands for. Modules: ``template`` (the template and the grid), ``fields``
(random fields, distance maps), ``variants`` (normal anatomical variants), ``anatomy``
(subjects), ``lesions``, ``dicom`` (the CT writer) and
``cohort`` (parameters, files, generation and reuse).
"""

from .anatomy import NUISANCES, DemoSubject, synthesize_subject
from .cohort import (
    DATALIST_NAME,
    DEMO_GENERATOR_VERSION,
    LESIONS_NAME,
    MANIFEST_NAME,
    DemoCohortParameters,
    ensure_demo_cohort,
    generate_demo_cohort,
    subject_quantiles,
)
from .dicom import write_ct_series
from .fields import depth_mm, smooth_field
from .lesions import HARD_KINDS, draw_lesions, lesion_kinds, pick_lesion_centre
from .template import DEMO_MODALITIES, DemoTemplate, cohort_grid, load_demo_template

__all__ = [
    "DATALIST_NAME",
    "DEMO_GENERATOR_VERSION",
    "DEMO_MODALITIES",
    "HARD_KINDS",
    "LESIONS_NAME",
    "MANIFEST_NAME",
    "NUISANCES",
    "DemoCohortParameters",
    "DemoSubject",
    "DemoTemplate",
    "cohort_grid",
    "depth_mm",
    "draw_lesions",
    "ensure_demo_cohort",
    "generate_demo_cohort",
    "lesion_kinds",
    "load_demo_template",
    "pick_lesion_centre",
    "smooth_field",
    "subject_quantiles",
    "synthesize_subject",
    "write_ct_series",
]
