"""Vision-language models: concept matrices from a VLM (`vlm`), and the captions and object
crops (`captions`, `crops`) its training on the world uses.

No imports here: a rule importing any module below hashes this file too (nexplain.codeversion).
"""
