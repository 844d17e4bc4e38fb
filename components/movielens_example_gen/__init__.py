"""MovieLensExampleGen: GroupLens MovieLens files -> ratings and candidate Examples."""
