"""Making rows smaller, each step with its recorded loss: pooling (pool.py), a fitted PCA
projection (pca.py fits it, projection.py is its file, apply_projection.py applies it on
the device), the storage dtype (cast.py: a cast, or int8 with scales), and the record of
what each cost (losses.py)."""
