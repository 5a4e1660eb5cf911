"""npy outputs at a URL prefix: the object store (store.py) and the local staging folder
uploaded commit by commit (staged.py)."""
