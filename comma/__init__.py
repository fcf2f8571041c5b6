"""comma: the code behind the comma-study workflow.

Reproduces Ren et al. (ACL 2020), "A Study of Non-autoregressive Model for Sequence
Generation": datasets and their preparation (`comma.data`), models (`comma.models`), and the
attention density ratio R(p) (`comma.ratio`). Every rule of the Snakemake workflow calls one
function of this package, so everything the workflow does can also be run from Python.
"""

__version__ = "0.1.0"
