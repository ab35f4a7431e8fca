"""What a world model is beyond `Magi` itself (docs/design.md §6, §8): the frame tokenizer
(`tokenizer`: a small AutoencoderKL trained on recordings, `magi tokenizer`) and the world model
measured against the emulator (`evaluate`: `magi eval world-model`). `magi/play/` is the app on top.

Submodules are imported on use (`from magi.world.tokenizer import ...`): the tokenizer pulls in
diffusers, which the recordings and the dataset do not need.
"""
