"""TLU-Net (``tlu_net``, paper 001): U-Net with a transferable encoder and a multi-label head."""

from __future__ import annotations

from defectkit.models import register_model
from defectkit.models.tlu_net.model import ENCODER_ALIASES, STRIDE, TluNet, TluNetOutput, smp_encoder_name

# The constructor is the builder: its keyword arguments are the config's ``model`` section.
tlu_net = register_model("tlu_net")(TluNet)

__all__ = ["ENCODER_ALIASES", "STRIDE", "TluNet", "TluNetOutput", "smp_encoder_name", "tlu_net"]
