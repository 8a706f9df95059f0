"""Fine-tuning with peft: LoRA on the fp32 base, QLoRA on a frozen 4-bit (bitsandbytes NF4) base.

Training runs on HF transformers' model of the same checkpoint, so adapters are peft's standard format with HF
module names; `engine.lora` maps them onto the engine's fused layers for serving.
"""

import logging
import warnings

# bitsandbytes' CPU backend offers to download a faster kernel from the model hub; this project stays offline.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
# peft 0.21 still asks transformers 5 for the renamed `is_gradient_checkpointing` on every model it wraps
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
