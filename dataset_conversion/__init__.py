"""Dataset converters (``nnunet_mamba.dataset_conversion``)."""
