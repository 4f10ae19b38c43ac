"""Readers of published data layouts (AV-MNIST arrays, MM-IMDB, RGB-D folders, the MFH layouts, Hateful Memes,
UCI mfeat, the bundled AV-Digits) and the on-disk arrays they hand out."""
