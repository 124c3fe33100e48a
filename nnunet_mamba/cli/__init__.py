"""Command-line interface (``nnunet-mamba``)."""
