"""Network families of the Next3D generator: StyleGAN2 layers, the style-UNet, super-resolution, Next3D itself."""
