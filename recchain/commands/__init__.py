"""Sub-commands of the `recchain` CLI; each module exposes `register(subparsers)`."""
