"""Image classification on nnU-Net datasets: per-case classes, metrics, plots, whole-image inference."""
