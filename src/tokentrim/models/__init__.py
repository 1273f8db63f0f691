"""Networks only: the causal Wan transformer and loaders for the VAE and text encoder."""
