"""Pure-PyTorch tensor ops of StyleGAN2/EG3D (no compiled code), with the semantics of the reference ("_ref")
paths of NVlabs' torch_utils/ops."""
