"""What a dataset is to mmdistill: the column and item dataset types, the split interface, collation and item
transforms. Everything else in :mod:`mmdistill.data` produces these."""
