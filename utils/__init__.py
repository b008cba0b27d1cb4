"""The library every step shares, in layers that follow the data flow; each imports only the layers below it.

errors, distributed -> data -> models -> engine -> objectives -> evaluation -> flags
"""
