"""The directory ``python -m keepalive run`` puts first on PYTHONPATH (see sitecustomize.py).

A package only so that it is installed with keepalive; nothing imports it as one.
"""
