"""Compute of the paper's other analyses (``ddsem analyze``): tensors and configs in, results
and figures out. One module per analysis; storage and progress are the jobs' (``ddsem.jobs.analyze``).
"""
