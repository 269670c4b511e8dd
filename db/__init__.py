"""Storage: models, the engine/session factory, the embedded server and migrations."""
