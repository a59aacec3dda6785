"""Test helpers shared by several test folders, one module per concern.

- ``cli``: project scripts and CLIs run as real child processes (``run_script``, ``cli_process``).
- ``servers``: a real local Triton, a loopback HTTP stub, background traffic.
- ``browsers``: a page rendered by headless chromium.
- ``tiny_models``: tiny real image and landmark models exported to ONNX.
- ``images``: hostile PNG files and a Kaggle-style sample slice.
- ``published``: a real published ``ASL`` dataset and a briefly trained model.
- ``workspaces``: an offline workspace for fixtures wider than one test.
- ``files``: workspace fingerprints and one-line-error checks.
- ``task_harness``: a task script's ``main`` on a mock ClearML task.
- ``clearml_stub``: a loopback mock of the ClearML API and files server, and agent set-up.

Import from the module: ``from asl_testkit.servers import start_server``.
"""
