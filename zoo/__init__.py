"""The offline miniature's trained model zoos, shipped with wrpo (one folder per world: weights, tokenizers, toyworld.json
and MANIFEST.json with the SHA-256 of every file). Written by `wrpo-zoo --ship`; read by `wrpo.toyworld.build_zoo`."""
