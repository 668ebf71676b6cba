"""packing"""

from toolkit.packing._packer import STRATEGIES, BatchQueue, Packer, PackingSettings, PackResult, pack
from toolkit.packing._tokens import count_tokens, estimate_tokens, get_counter, register_tokenizer

__all__ = [
    "BatchQueue", "PackResult", "Packer", "PackingSettings", "STRATEGIES", "count_tokens", "estimate_tokens",
    "get_counter", "pack", "register_tokenizer",
]
