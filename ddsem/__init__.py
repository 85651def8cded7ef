"""ddsem: what do distilled data sets actually store?

Exact leave-one-out influence of distilled images on real test images, semantic attributes of
those test images, and the paper's other analyses, all in one SQLite database.
"""

__version__ = "0.1.0"
