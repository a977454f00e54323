// Exists only to own the precompiled <torch/torch.h> that other targets reuse.
