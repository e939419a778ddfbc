"""Image data: the labelled-image-set contract, the embedded world and real dataset readers."""
