"""Image restoration with the segmentation backbones: degradations, loss, metrics, inference, figures."""
