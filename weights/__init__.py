"""Model manifest (models.toml) and the project's own trained decoders, shipped as package data."""
