"""The ASL pipeline: one DAG definition (``dag``) read by two executors.

``local_executor`` runs it step by step as subprocesses with no server; ``clearml_controller``
turns the same definition into a ClearML ``PipelineController``. ``selection`` holds the
best-model rule used by the ``select_best`` step.
"""
