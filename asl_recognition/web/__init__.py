"""The live recognition page: a Starlette app in front of the Triton ensemble (``make demo``)."""
