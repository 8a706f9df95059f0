"""Importing this module registers the built-in strategies."""

from engine.quant import awq, bitnet, gptq, rtn

BUILT_IN = {
    cls.name: cls
    for cls in (rtn.Int8Strategy, rtn.Int4Strategy, gptq.GPTQStrategy, awq.AWQStrategy, bitnet.BitNetStrategy)
}
