"""Training Next3D generators: synthetic data, the deformation-aware dual discriminator, the GAN loss, the training
loop with exact resume, and quality figures.

Modules (imported on use, so `next3d --help` stays fast):
    synthetic      head samplers (FLAME-format or stand-in) and `generate_dataset`
    dataset        `FolderDataset`: images + dataset.json + meshes.npz + topology.npz, with clear errors
    mesh_render    perspective rendering of FLAME meshes with EG3D cameras; D's mesh condition
    discriminator  `DualDiscriminator` (official EG3D names) with extra mesh channels
    loss           `Next3DLoss`: non-saturating loss, R1, density regularization, blur, pose conditioning
    options        `TrainingOptions` (torch-free, so the CLI builds its options from it)
    loop           `train`: snapshots, resume, log, sample grids
    distributed    torchrun data parallelism: batch shards, gradient averaging, the process group
    metrics        3-D consistency, control, Fréchet distance with a user-given feature network

The commands `train`, `make-dataset` and `evaluate` are in core/cli/.
"""
