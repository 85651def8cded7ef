"""Jobs of ``ddsem analyze <kind>``: the paper's analyses run on stored distilled sets.

One module per kind (recognition, inverse, clipping, extra_training, class_influence), each
with the four parts of every job (``Request``, ``plan``, ``run``, ``Result.as_json``). A kind's
work is split into units (a seed's training, a real-data model, a set's retraining) stored as
complete AnalysisRun rows, so a killed run resumes and an identical run is a no-op; figures are
redrawn from the stored results on every run. ``common`` holds what the kinds share.
"""

KINDS = (
    "recognition", "inverse", "clipping", "extra-training", "class-influence", "mixing",
    "agreement",
)  # fmt: skip
