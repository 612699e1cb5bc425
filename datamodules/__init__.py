"""Face datasets, group schemes, partitions, training splits and image loading.

Everything except :mod:`datamodules.datamodule` imports without Lightning.
"""
