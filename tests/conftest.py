"""Suite-wide: --precision auto resolves to fp32 on every machine (DANCE_NATIVE_BF16=0, inherited by the scripts the
tests start), so no result depends on whether the CPU running the suite computes bf16 natively;
tests/test_fast_defaults.py checks the detection itself with the variable removed."""
import os

os.environ["DANCE_NATIVE_BF16"] = "0"
