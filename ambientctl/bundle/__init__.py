"""Support bundles: the layout contract, reading (dir or .tar.gz) and writing."""
