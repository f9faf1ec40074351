"""Model builders, adapters and identity-token encoders."""
