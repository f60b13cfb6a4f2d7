__version__ = "0.1.0"

_COLLECTION_NAMES = ("connect", "Database", "Collection", "Result", "CollectionError")

def __getattr__(name):
    "`minivecdb.connect` and the collection types, imported on first use so `import minivecdb` stays light."
    if name in _COLLECTION_NAMES:
        from . import collection
        return getattr(collection, name)
    raise AttributeError(f"module 'minivecdb' has no attribute {name!r}")

def __dir__(): return sorted([*globals(), *_COLLECTION_NAMES])
